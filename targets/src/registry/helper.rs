//! The Docker credential-helper protocol, as the CLI speaks it: `docker-credential-NAME get`
//! found on `PATH`, the server on stdin, `{"Username","Secret"}` on stdout; a helper that
//! has nothing for the server says so and exits non-zero, which means no credentials.
//!
//! Helpers run synchronously; they answer in milliseconds. Their output holds the secret, so
//! it is never quoted in an error.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

use super::{CredentialSource, Credentials, RegistryError};

/// What a helper prints for a server it has no credentials for (docker-credential-helpers'
/// `ErrCredentialsNotFound`, which the CLI takes as "no credentials", not a failure).
const HELPER_NOT_FOUND: &str = "credentials not found in native keychain";
/// The user name with which helpers mark an identity token (the CLI's `tokenUsername`).
const TOKEN_USERNAME: &str = "<token>";

/// Runs `docker-credential-<helper> get` with `key` on stdin, found on `PATH`.
pub(super) fn get(
    helper: &str,
    key: &str,
    host: &str,
    config: &Path,
    var: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Credentials>, RegistryError> {
    let name = format!("docker-credential-{helper}");
    let path = var("PATH").unwrap_or_default();
    let Some(program) = std::env::split_paths(&path).map(|dir| dir.join(&name)).find(|p| p.is_file()) else {
        return Err(RegistryError::HelperMissing {
            program: name,
            host: host.to_string(),
            config: config.to_path_buf(),
        });
    };
    let run_error = |source| RegistryError::HelperRun { program: program.clone(), host: host.to_string(), source };
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(run_error)?;
    let written = child.stdin.take().expect("stdin is piped").write_all(key.as_bytes());
    let output = child.wait_with_output().map_err(run_error)?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        // Helpers print their errors on stdout; a failure message never holds the secret.
        if stdout.trim() == HELPER_NOT_FOUND {
            return Ok(None);
        }
        let message = [stdout.trim(), String::from_utf8_lossy(&output.stderr).trim()]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        return Err(RegistryError::HelperFailed {
            program,
            host: host.to_string(),
            status: output.status.to_string(),
            message,
        });
    }
    written.map_err(run_error)?;
    let problem = |problem: &str| RegistryError::HelperOutput {
        program: program.clone(),
        host: host.to_string(),
        problem: problem.to_string(),
    };
    // Never quote the output: it holds the secret.
    let answer: Value = serde_json::from_str(&stdout).map_err(|_| problem("the output is not JSON"))?;
    let text = |field: &str| answer.get(field).and_then(Value::as_str).map(str::to_string);
    let (Some(user), Some(secret)) = (text("Username"), text("Secret")) else {
        return Err(problem("the output lacks Username or Secret (as strings)"));
    };
    if secret.is_empty() {
        return Ok(None);
    }
    let source = CredentialSource::Helper { program: name, config: config.to_path_buf() };
    if user == TOKEN_USERNAME {
        return Ok(Some(Credentials::with_identity_token("", secret, source)));
    }
    Ok(Some(Credentials::with_password(user, secret, source)))
}
