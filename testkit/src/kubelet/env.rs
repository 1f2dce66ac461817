//! A container's environment (`env`, `envFrom`) resolved to `NAME=value` strings, and the
//! `$(VAR)` expansion Kubernetes applies to env values, `command` and `args`.

use super::refs::{self, Source};
use super::{Context, quantity};
use k8s_openapi::api::core::v1::{Container, Pod};
use std::collections::HashMap;

/// The resolved environment, in order (a later duplicate overrides an earlier one, as in the
/// kubelet).
pub(crate) async fn resolve(
    ctx: &Context,
    pod: &Pod,
    container: &Container,
    pod_ip: &str,
) -> Result<Vec<(String, String)>, String> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let mut vars: Vec<(String, String)> = Vec::new();
    let set = |vars: &mut Vec<(String, String)>, name: String, value: String| {
        vars.retain(|(existing, _)| *existing != name);
        vars.push((name, value));
    };
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let (source, name, optional) = if let Some(map) = &from.config_map_ref {
            (Source::ConfigMap, map.name.clone(), map.optional.unwrap_or(false))
        } else if let Some(secret) = &from.secret_ref {
            (Source::Secret, secret.name.clone(), secret.optional.unwrap_or(false))
        } else {
            continue;
        };
        for (key, value) in refs::required_keys(&ctx.client, &namespace, source, &name, optional).await? {
            set(&mut vars, format!("{prefix}{key}"), String::from_utf8_lossy(&value).into_owned());
        }
    }
    for var in container.env.iter().flatten() {
        let value = if let Some(from) = &var.value_from {
            let key_ref = |source, name: &str, key: &str, optional: Option<bool>| {
                (source, name.to_string(), key.to_string(), optional.unwrap_or(false))
            };
            let lookup = if let Some(sel) = &from.secret_key_ref {
                Some(key_ref(Source::Secret, &sel.name, &sel.key, sel.optional))
            } else {
                from.config_map_key_ref
                    .as_ref()
                    .map(|sel| key_ref(Source::ConfigMap, &sel.name, &sel.key, sel.optional))
            };
            if let Some((source, name, key, optional)) = lookup {
                let keys = refs::keys(&ctx.client, &namespace, source, &name).await?;
                let noun = if source == Source::Secret { "secret" } else { "configmap" };
                match keys.as_ref().map(|keys| keys.get(&key)) {
                    Some(Some(value)) => String::from_utf8_lossy(value).into_owned(),
                    _ if optional => continue,
                    Some(None) => return Err(format!("couldn't find key {key} in {noun} {namespace}/{name}")),
                    None => return Err(format!("{noun} {name:?} not found")),
                }
            } else if let Some(field) = &from.field_ref {
                refs::field(pod, &field.field_path, pod_ip)?
            } else if let Some(resource) = &from.resource_field_ref {
                resource_value(container, &resource.resource, resource.divisor.as_ref().map(|d| d.0.as_str()))?
            } else {
                return Err(format!("env {:?}: valueFrom names no source", var.name));
            }
        } else {
            let defined: HashMap<&str, &str> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            expand(var.value.as_deref().unwrap_or_default(), &defined)
        };
        set(&mut vars, var.name.clone(), value);
    }
    Ok(vars)
}

/// `resourceFieldRef`: a limit or request of the container, divided by `divisor` (default 1).
fn resource_value(container: &Container, resource: &str, divisor: Option<&str>) -> Result<String, String> {
    let (kind, name) = resource.split_once('.').ok_or_else(|| format!("bad resource {resource:?}"))?;
    let resources = container.resources.as_ref();
    let map = match kind {
        "limits" => resources.and_then(|r| r.limits.as_ref()),
        "requests" => resources.and_then(|r| r.requests.as_ref()),
        _ => return Err(format!("bad resource {resource:?}")),
    };
    let value = match map.and_then(|m| m.get(name)) {
        Some(quantity) => quantity::parse(&quantity.0)?,
        // Unset limits read as the node's allocatable, as in the kubelet.
        None if name == "cpu" => 2.0,
        None if name == "memory" => 24.0 * 1024.0 * 1024.0 * 1024.0,
        None => 0.0,
    };
    let divisor = quantity::parse(divisor.unwrap_or("1"))?;
    Ok(format!("{}", (value / divisor).ceil() as i64))
}

/// Kubernetes' `$(VAR)` expansion: a defined `$(NAME)` is replaced, an undefined one is kept
/// as written, `$$` is a literal `$`.
pub(crate) fn expand(input: &str, vars: &HashMap<&str, &str>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(name_and_more) = after.strip_prefix('(')
            && let Some(close) = name_and_more.find(')')
        {
            let name = &name_and_more[..close];
            match vars.get(name) {
                Some(value) => out.push_str(value),
                None => out.push_str(&rest[at..at + 2 + close + 1]),
            }
            rest = &name_and_more[close + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expansion() {
        let vars = HashMap::from([("A", "1"), ("HOST", "db")]);
        let check = |input: &str, expect: &str| assert_eq!(expand(input, &vars), expect, "{input}");
        check("plain", "plain");
        check("$(A)", "1");
        check("postgres://$(HOST):5432", "postgres://db:5432");
        check("$(MISSING)", "$(MISSING)");
        check("$$(A)", "$(A)");
        check("cost $5", "cost $5");
        check("$(unclosed", "$(unclosed");
    }
}
