//! Human-readable artifacts rendered from the fleet through minijinja templates.
//!
//! Templates live in the workspace's `templates/` directory and are embedded in the binary.
//! Undefined variables are errors (a typo in a template fails a test, not a deployment), and
//! output is never auto-escaped: templates quote values with `|tojson`, which is valid YAML.

pub mod compose;
pub mod kubernetes;
pub mod proxmox;
pub mod systemd;

use minijinja::syntax::SyntaxConfig;
use minijinja::value::{Kwargs, Serde};
use minijinja::{AutoEscape, Environment, UndefinedBehavior};

/// The embedded templates, by name.
pub const TEMPLATES: &[(&str, &str)] = &[
    ("docker-compose.yaml.j2", include_str!("../../../templates/docker-compose.yaml.j2")),
    ("docker-compose-service.yaml.j2", include_str!("../../../templates/docker-compose-service.yaml.j2")),
    ("docker-compose-tail.yaml.j2", include_str!("../../../templates/docker-compose-tail.yaml.j2")),
    ("kubernetes.yaml.j2", include_str!("../../../templates/kubernetes.yaml.j2")),
    ("lxc.json.j2", include_str!("../../../templates/lxc.json.j2")),
    ("rivetos.service.j2", include_str!("../../../templates/rivetos.service.j2")),
];

/// A rendering failure: always a bug in a template or its context.
#[derive(Debug, thiserror::Error)]
#[error("template {template} failed to render")]
pub struct RenderError {
    pub template: &'static str,
    #[source]
    pub source: minijinja::Error,
}

/// The environment holding every template, strict about undefined values.
pub fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_syntax(
        SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .keep_trailing_newline(true)
            .build()
            .expect("default delimiters are valid"),
    );
    // minijinja's `tojson` writes an undefined value as `null`, which would defeat strict
    // undefined behaviour: every value in these templates goes through `tojson`.
    env.add_filter("tojson", |value: &minijinja::Value, indent: Option<minijinja::Value>, kwargs: Kwargs| {
        if value.is_undefined() {
            return Err(minijinja::Error::new(
                minijinja::ErrorKind::UndefinedError,
                "an undefined value was passed to tojson",
            ));
        }
        minijinja::filters::tojson(value, indent, kwargs)
    });
    for (name, source) in TEMPLATES {
        env.add_template(name, source).expect("embedded templates parse (checked by tests)");
    }
    env
}

/// The environment is built once per process: parsing the templates is not free.
fn shared() -> &'static Environment<'static> {
    static ENV: std::sync::OnceLock<Environment<'static>> = std::sync::OnceLock::new();
    ENV.get_or_init(environment)
}

/// Renders one template with a JSON context.
pub fn render(template: &'static str, context: &serde_json::Value) -> Result<String, RenderError> {
    render_value(template, minijinja::Value::from(Serde(context)))
}

/// Renders one template with a minijinja context (no JSON conversion).
pub fn render_value(template: &'static str, context: minijinja::Value) -> Result<String, RenderError> {
    let tmpl = shared().get_template(template).map_err(|source| RenderError { template, source })?;
    tmpl.render(context).map_err(|source| RenderError { template, source })
}

/// One rendered file: its name inside the output directory, its text, and whether it holds
/// secrets (written 0600).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    pub path: String,
    pub contents: String,
    pub secret: bool,
}
