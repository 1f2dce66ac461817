//! `GET http://127.0.0.1:<port><path>` from inside a container, through the engine's exec
//! API: how agents on a `tcp://` engine are probed, since the container addresses of another
//! machine do not route from the control host.
//!
//! The command is `timeout <secs> wget -q -S -O - <url>`, in exec form (no shell, so nothing
//! in the path is interpreted). busybox `wget -S` prints the status line on stderr and the
//! body on stdout; on a non-2xx answer it exits 1 and keeps no body, so such an answer is
//! reported with its status and an empty body. wget's own `-T` is not used: Debian's busybox
//! 1.35 wget crashes on it; busybox `timeout` bounds the request instead. The image needs
//! `wget` and `timeout`, as busybox (and so `node:*-alpine`) provides; rivetctl's container
//! health check already runs `wget`.

use std::time::Duration;

use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use futures_util::StreamExt;

use super::Engine;
use crate::http::MAX_BODY;

/// Extra time the API calls around the command may take.
const SLACK: Duration = Duration::from_secs(3);

/// The command run inside the container.
pub fn command(port: u16, path: &str, limit: Duration) -> Vec<String> {
    let secs = limit.as_secs().max(1).to_string();
    let url = format!("http://127.0.0.1:{port}{path}");
    ["timeout", &secs, "wget", "-q", "-S", "-O", "-", &url].iter().map(|s| s.to_string()).collect()
}

/// `GET path` on the container's `port` as seen inside it, within `limit`: the status and
/// the body (empty for a non-2xx answer). A failure to get any answer is an error.
pub async fn http_get(
    engine: &Engine,
    container: &str,
    port: u16,
    path: &str,
    limit: Duration,
) -> Result<(u16, Vec<u8>), String> {
    match tokio::time::timeout(limit + SLACK, run(engine, container, command(port, path, limit))).await {
        Ok(Ok((code, stdout, stderr))) => parse(code, stdout, &stderr),
        Ok(Err(err)) => Err(format!("exec in {container}: {err}")),
        Err(_) => Err(format!("exec in {container}: no answer within {}s", (limit + SLACK).as_secs())),
    }
}

/// Runs `cmd` in the container: exit code, stdout (up to [`MAX_BODY`]), stderr.
async fn run(
    engine: &Engine,
    container: &str,
    cmd: Vec<String>,
) -> Result<(i64, Vec<u8>, String), bollard::errors::Error> {
    let options = CreateExecOptions {
        cmd: Some(cmd),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        ..Default::default()
    };
    let exec = engine.call().create_exec(container, options).await?;
    let start = StartExecOptions { detach: false, tty: false, output_capacity: Some(64 * 1024) };
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    if let StartExecResults::Attached { mut output, .. } = engine.call().start_exec(&exec.id, Some(start)).await? {
        while let Some(item) = output.next().await {
            match item? {
                bollard::container::LogOutput::StdOut { message } if stdout.len() < MAX_BODY => {
                    stdout.extend_from_slice(&message[..message.len().min(MAX_BODY - stdout.len())]);
                }
                bollard::container::LogOutput::StdErr { message } if stderr.len() < 64 * 1024 => {
                    stderr.extend_from_slice(&message);
                }
                _ => {}
            }
        }
    }
    let code = engine.call().inspect_exec(&exec.id).await?.exit_code.unwrap_or(-1);
    Ok((code, stdout, String::from_utf8_lossy(&stderr).into_owned()))
}

/// Reads wget's outcome: the last `HTTP/1.x NNN` line of stderr is the status (redirects
/// print several).
pub fn parse(code: i64, stdout: Vec<u8>, stderr: &str) -> Result<(u16, Vec<u8>), String> {
    let status = stderr
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let version = words.next()?;
            version.starts_with("HTTP/").then(|| words.next()?.parse::<u16>().ok()).flatten()
        })
        .next_back();
    let last = stderr.lines().map(str::trim).rfind(|l| !l.is_empty()).unwrap_or("no output");
    match (code, status) {
        (0, Some(status)) => Ok((status, stdout)),
        (_, Some(status)) if !(200..300).contains(&status) => Ok((status, Vec::new())),
        (124 | 143, _) => Err("no answer in time (timeout stopped wget)".into()),
        (126 | 127, _) => {
            Err(format!("cannot run the probe in the container ({last}): the image needs wget and timeout"))
        }
        _ => Err(format!("wget exited {code}: {last}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_is_exec_form_with_the_path_as_one_argument() {
        let cmd = command(3100, "/health?x=$(id)", Duration::from_millis(2500));
        assert_eq!(cmd, ["timeout", "2", "wget", "-q", "-S", "-O", "-", "http://127.0.0.1:3100/health?x=$(id)"]);
        assert_eq!(command(1, "/", Duration::from_millis(10))[1], "1", "at least a second");
    }

    #[test]
    fn wget_outcomes() {
        let ok = "  HTTP/1.1 200 OK\n  Content-Length: 20\n";
        assert_eq!(parse(0, b"{\"status\":\"healthy\"}".to_vec(), ok), Ok((200, b"{\"status\":\"healthy\"}".to_vec())));
        let unavailable =
            "  HTTP/1.1 503 Service Unavailable\nwget: server returned error: HTTP/1.1 503 Service Unavailable\n";
        assert_eq!(parse(1, Vec::new(), unavailable), Ok((503, Vec::new())));
        let redirected = "  HTTP/1.1 302 Found\n  Location: /x\n  HTTP/1.1 200 OK\n";
        assert_eq!(parse(0, b"x".to_vec(), redirected), Ok((200, b"x".to_vec())));
        let refused = "wget: can't connect to remote host (127.0.0.1): Connection refused\n";
        assert_eq!(parse(1, Vec::new(), refused), Err(format!("wget exited 1: {}", refused.trim())));
        assert_eq!(parse(143, Vec::new(), "Terminated\n"), Err("no answer in time (timeout stopped wget)".into()));
        let missing = "timeout: can't execute 'wget': No such file or directory\n";
        assert!(parse(127, Vec::new(), missing).unwrap_err().contains("the image needs wget and timeout"));
    }
}
