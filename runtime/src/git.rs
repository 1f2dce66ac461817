//! Running `git` for the source tree, safely: every command has a deadline and is killed
//! when it expires, git never waits on a prompt (`GIT_TERMINAL_PROMPT=0`, stdin closed),
//! and callers pass values from the config only after `--` / `--end-of-options`, so a URL
//! or ref can never be read as an option. Blocking: call it off the async runtime.

use std::ffi::OsStr;
use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// What a finished git command printed.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Finished {
    /// stdout as trimmed text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).trim().to_string()
    }

    /// stderr as trimmed text.
    pub fn errors(&self) -> String {
        String::from_utf8_lossy(&self.stderr).trim().to_string()
    }
}

/// Why a git command did not finish.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("cannot run git")]
    Spawn(#[source] std::io::Error),
    #[error("git {command} did not finish within {}s and was stopped", after.as_secs_f64())]
    TimedOut { command: String, after: Duration },
}

/// Runs `git args…` and waits at most `timeout` for it; on expiry the child is killed.
pub fn run<S: AsRef<OsStr>>(args: &[S], timeout: Duration) -> Result<Finished, GitError> {
    let mut child = Command::new("git")
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GCM_INTERACTIVE", "never")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(GitError::Spawn)?;
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = match wait_until(&mut child, deadline) {
        Some(status) => status,
        None => {
            // SIGKILL: git holds no state we need, and a hung connection ignores nothing else.
            let _ = child.kill();
            let _ = child.wait();
            return Err(GitError::TimedOut { command: describe(args), after: timeout });
        }
    };
    // A helper git started (ssh, remote-https) may still hold the pipes: wait for them only
    // until the deadline, plus a moment.
    let grace = deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(1);
    let stdout = stdout.recv_timeout(grace).unwrap_or_default();
    let stderr = stderr.recv_timeout(Duration::from_secs(1)).unwrap_or_default();
    Ok(Finished { status, stdout, stderr })
}

/// Waits for the child until `deadline`; `None` when it is still running then.
fn wait_until(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    let mut pause = Duration::from_millis(2);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Reads a pipe to its end on its own thread (so a full pipe never blocks git).
fn drain(pipe: Option<impl Read + Send + 'static>) -> mpsc::Receiver<Vec<u8>> {
    let (send, receive) = mpsc::channel();
    if let Some(mut pipe) = pipe {
        std::thread::spawn(move || {
            let mut buffer = Vec::new();
            let _ = pipe.read_to_end(&mut buffer);
            let _ = send.send(buffer);
        });
    }
    receive
}

/// The git subcommand, for messages (`clone`, `fetch`, …), skipping global options.
fn describe<S: AsRef<OsStr>>(args: &[S]) -> String {
    let mut args = args.iter().map(|a| a.as_ref().to_string_lossy());
    while let Some(arg) = args.next() {
        match arg.as_ref() {
            "-C" | "-c" | "--git-dir" | "--work-tree" => {
                args.next();
            }
            other if other.starts_with('-') => {}
            other => return other.to_string(),
        }
    }
    "(no command)".to_string()
}

/// True for a full object id: 40 (SHA-1) or 64 (SHA-256) lower-case hex digits.
pub fn is_object_id(text: &str) -> bool {
    matches!(text.len(), 40 | 64) && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A URL as it may be shown: credentials (`https://user:token@host`) replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_git_server_that_never_answers_is_stopped_at_the_deadline() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        // Accept and hold every connection, never answering.
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming() {
                held.push(stream);
            }
        });
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("mirror.git");
        let url = format!("git://127.0.0.1:{port}/x");
        let args =
            [OsStr::new("clone"), OsStr::new("--mirror"), OsStr::new("--"), OsStr::new(&url), target.as_os_str()];
        let started = Instant::now();
        let err = run(&args, Duration::from_millis(700)).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
        assert!(matches!(err, GitError::TimedOut { ref command, .. } if command == "clone"), "{err:?}");
        assert_eq!(err.to_string(), "git clone did not finish within 0.7s and was stopped");
    }

    #[test]
    fn output_and_status_come_back() {
        let done = run(&["--version"], Duration::from_secs(30)).unwrap();
        assert!(done.status.success());
        assert!(done.text().starts_with("git version"), "{}", done.text());
        let failed = run(&["--git-dir", "/nonexistent", "rev-parse", "HEAD"], Duration::from_secs(30)).unwrap();
        assert!(!failed.status.success());
        assert!(failed.errors().contains("not a git repository"), "{}", failed.errors());
    }

    #[test]
    fn git_never_waits_on_a_prompt() {
        // An HTTP server that asks for credentials on every request.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request);
                let _ = std::io::Write::write_all(
                    &mut stream,
                    b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"x\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            }
        });
        let url = format!("http://127.0.0.1:{port}/x.git");
        let done = run(&["ls-remote", "--", &url], Duration::from_secs(20)).unwrap();
        assert!(!done.status.success());
        assert!(done.errors().contains("terminal prompts disabled"), "{}", done.errors());
    }

    #[test]
    fn object_ids() {
        assert!(is_object_id(&"a".repeat(40)));
        assert!(is_object_id(&"0123456789abcdef".repeat(4)));
        for bad in ["", "main", "--output=/tmp/x", &"A".repeat(40), &"a".repeat(39), &format!("{}\n", "a".repeat(40))] {
            assert!(!is_object_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn credentials_in_urls_are_not_shown() {
        assert_eq!(redact_url("https://me:tok@github.com/o/r.git"), "https://***@github.com/o/r.git");
        assert_eq!(redact_url("ssh://git@host/r"), "ssh://***@host/r");
        assert_eq!(redact_url("https://github.com/o/r@x"), "https://github.com/o/r@x");
        assert_eq!(redact_url("git@github.com:o/r.git"), "git@github.com:o/r.git");
    }

    #[test]
    fn subcommands_are_named_past_global_options() {
        assert_eq!(describe(&["--git-dir", "/x", "fetch", "--quiet"]), "fetch");
        assert_eq!(describe(&["-C", "/x", "rev-parse", "HEAD"]), "rev-parse");
    }
}
