//! The parts of talking to the Proxmox VE API that need no connection: API token
//! authentication, the task ids (UPIDs) that every asynchronous call returns, how a finished
//! task's `exitstatus` reads, and which failures the API itself calls transient.

/// An API token: `user@realm!tokenid` and its secret (never printed: `Debug` hides it).
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    id: String,
    secret: String,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token").field("id", &self.id).field("secret", &"(hidden)").finish()
    }
}

/// Why an answer or an id cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaskError {
    #[error(
        "deployment.proxmox.token_id {id:?} is not an API token id (`user@realm!tokenid`, e.g. `rivetctl@pve!deploy`)"
    )]
    TokenId { id: String },
    #[error("the API token secret for {id} is empty (set token_secret, e.g. `${{PVE_TOKEN_SECRET}}` from .env)")]
    NoSecret { id: String },
    #[error("{text:?} is not a Proxmox VE task id (UPID)")]
    Upid { text: String },
}

impl Token {
    /// Checks the id's shape (`user@realm!tokenid`) and that there is a secret.
    pub fn new(id: &str, secret: &str) -> Result<Token, TaskError> {
        let shaped = id.split_once('@').and_then(|(user, rest)| {
            let (realm, name) = rest.split_once('!')?;
            (!user.is_empty() && !realm.is_empty() && !name.is_empty() && !name.contains('!')).then_some(())
        });
        if shaped.is_none() || id.chars().any(char::is_whitespace) {
            return Err(TaskError::TokenId { id: id.to_string() });
        }
        if secret.trim().is_empty() {
            return Err(TaskError::NoSecret { id: id.to_string() });
        }
        Ok(Token { id: id.to_string(), secret: secret.trim().to_string() })
    }

    /// `user@realm!tokenid`, which messages name (never the secret).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The `Authorization` header value: `PVEAPIToken=user@realm!tokenid=secret`.
    pub fn header(&self) -> String {
        format!("PVEAPIToken={}={}", self.id, self.secret)
    }

    /// What a 401 means, naming the token: expired, or refused (wrong secret, deleted token,
    /// no such user).
    pub fn refused(&self, reason: &str) -> (String, String) {
        if reason.to_lowercase().contains("expired") {
            (
                format!("the Proxmox VE API token {} has expired", self.id),
                format!(
                    "extend it (`pveum user token modify {} --expire 0`) or create a new one and set its secret",
                    self.pair()
                ),
            )
        } else {
            (
                format!("the Proxmox VE API refused the token {} ({})", self.id, reason.trim()),
                "check token_id and the secret in .env; the token must exist and not be expired (docs/proxmox.md)"
                    .to_string(),
            )
        }
    }

    /// `user@realm tokenid`, as `pveum user token` takes them.
    fn pair(&self) -> String {
        let (user, name) = self.id.split_once('!').unwrap_or((&self.id, ""));
        format!("{user} {name}")
    }
}

/// A task id: `UPID:<node>:<pid>:<pstart>:<starttime>:<type>:<id>:<user>:` (hex numbers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upid {
    pub text: String,
    /// The node the task runs on, whose `/nodes/{node}/tasks/...` answer for it.
    pub node: String,
    pub pid: u32,
    pub starttime: u64,
    /// `vzcreate`, `vzstart`, `vzdestroy`, …
    pub kind: String,
    /// The vmid (or other object) the task is about; may be empty.
    pub id: String,
    pub user: String,
}

impl Upid {
    pub fn parse(text: &str) -> Result<Upid, TaskError> {
        let bad = || TaskError::Upid { text: text.to_string() };
        let rest = text.strip_prefix("UPID:").ok_or_else(bad)?;
        let parts: Vec<&str> = rest.split(':').collect();
        // node, pid, pstart, starttime, type, id, user, and the empty part after the last ':'.
        if parts.len() != 8 || !parts[7].is_empty() || parts[0].is_empty() || parts[4].is_empty() {
            return Err(bad());
        }
        let hex = |part: &str| u64::from_str_radix(part, 16).map_err(|_| bad());
        let pid = u32::try_from(hex(parts[1])?).map_err(|_| bad())?;
        hex(parts[2])?;
        Ok(Upid {
            text: text.to_string(),
            node: parts[0].to_string(),
            pid,
            starttime: hex(parts[3])?,
            kind: parts[4].to_string(),
            id: parts[5].to_string(),
            user: parts[6].to_string(),
        })
    }
}

/// How a task stands, from `GET /nodes/{node}/tasks/{upid}/status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskState {
    Running,
    /// `exitstatus` `OK`.
    Ok,
    /// `WARNINGS: n`: done, with `n` warnings in the task log to show.
    Warnings(u32),
    /// Any other `exitstatus`: the task's own error text.
    Failed(String),
}

impl TaskState {
    /// From the status answer's `status` (`running` | `stopped`) and `exitstatus`.
    pub fn of(status: &str, exitstatus: Option<&str>) -> TaskState {
        if status != "stopped" {
            return TaskState::Running;
        }
        match exitstatus.map(str::trim) {
            Some("OK") => TaskState::Ok,
            Some(text) => match text.strip_prefix("WARNINGS:").map(|n| n.trim().parse::<u32>()) {
                Some(Ok(n)) => TaskState::Warnings(n),
                _ => TaskState::Failed(text.to_string()),
            },
            None => TaskState::Failed("the task stopped without an exit status".to_string()),
        }
    }
}

/// Whether a failed call may be made again, by what the API says: a gateway or service
/// failure (502, 503, 504; 596, pveproxy's failure to reach another node), or a 500 whose
/// reason is a timeout, such as a configuration lock another task holds (`can't lock file
/// '/run/lock/lxc/pve-config-101.lock' - got timeout`). Other 500s (`Configuration file …
/// does not exist`) are answers, not accidents.
pub fn is_transient(status: u16, reason: &str) -> bool {
    match status {
        502 | 503 | 504 | 596 => true,
        500 => {
            let reason = reason.to_lowercase();
            reason.contains("got timeout") || reason.contains("can't lock file") || reason.contains("timed out")
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked_and_their_secret_never_shown() {
        let token = Token::new("rivetctl@pve!deploy", " 1234-abcd ").unwrap();
        assert_eq!(token.header(), "PVEAPIToken=rivetctl@pve!deploy=1234-abcd");
        assert!(!format!("{token:?}").contains("1234"));
        for bad in ["rivetctl@pve", "rivetctl!deploy", "@pve!x", "a@b!c!d", "a b@pve!x"] {
            assert!(matches!(Token::new(bad, "s"), Err(TaskError::TokenId { .. })), "{bad}");
        }
        assert!(matches!(Token::new("a@pve!x", "  "), Err(TaskError::NoSecret { .. })));
        let (message, hint) = token.refused("authentication failure: token expired");
        assert!(message.contains("rivetctl@pve!deploy") && message.contains("expired"), "{message}");
        assert!(hint.contains("pveum user token modify rivetctl@pve deploy"), "{hint}");
        let (message, _) = token.refused("authentication failure");
        assert!(message.contains("refused the token rivetctl@pve!deploy"), "{message}");
        assert!(!message.contains("1234"));
    }

    #[test]
    fn upids_name_their_node_and_kind() {
        let upid = Upid::parse("UPID:pve2:0000A1B2:00C0FFEE:6750F00D:vzcreate:310:rivetctl@pve!deploy:").unwrap();
        assert_eq!(upid.node, "pve2");
        assert_eq!(upid.pid, 0xA1B2);
        assert_eq!(upid.starttime, 0x6750F00D);
        assert_eq!(
            (upid.kind.as_str(), upid.id.as_str(), upid.user.as_str()),
            ("vzcreate", "310", "rivetctl@pve!deploy")
        );
        for bad in ["", "UPID:pve2:xyz:0:0:vzstart:1:u:", "UPID:pve2:1:0:0:vzstart:1:u", "TASK:pve2:1:0:0:a:1:u:"] {
            assert!(Upid::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn exit_statuses_read_as_pve_writes_them() {
        assert_eq!(TaskState::of("running", None), TaskState::Running);
        assert_eq!(TaskState::of("stopped", Some("OK")), TaskState::Ok);
        assert_eq!(TaskState::of("stopped", Some("WARNINGS: 2")), TaskState::Warnings(2));
        assert_eq!(
            TaskState::of("stopped", Some("unable to create CT 310 - disk full")),
            TaskState::Failed("unable to create CT 310 - disk full".into())
        );
        assert!(matches!(TaskState::of("stopped", None), TaskState::Failed(_)));
    }

    #[test]
    fn only_what_the_api_calls_transient_is_retried() {
        assert!(is_transient(500, "can't lock file '/run/lock/lxc/pve-config-310.lock' - got timeout"));
        assert!(is_transient(503, "service unavailable"));
        assert!(is_transient(596, "Broken pipe"));
        assert!(!is_transient(500, "Configuration file 'nodes/pve1/lxc/310.conf' does not exist"));
        assert!(!is_transient(400, "Parameter verification failed."));
        assert!(!is_transient(401, "authentication failure"));
    }
}
