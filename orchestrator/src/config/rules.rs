//! String formats used by config fields: durations, sizes, names, hosts, endpoints.
//!
//! Each rule checks a string and returns its normalised JSON value (durations become
//! milliseconds, memory sizes bytes), so the typed model holds numbers, not text to re-parse.

use serde_json::json;

use super::schema::TextRule;

/// Characters that must never reach a shell command line (upstream's `advertise_host` rule).
pub const SHELL_METACHARACTERS: &[char] = &[';', '&', '|', '`', '$', '<', '>', '(', ')', '\'', '"', '\\'];

pub const DURATION: TextRule = TextRule {
    expected: "a duration such as `500ms`, `30s`, `5m` or `1h30m`",
    pattern: "^([0-9]+(ms|s|m|h))+$",
    hint: "add a unit, for example `30s`",
    check: |text| parse_duration_ms(text).map(|ms| json!(ms)),
};

pub const MEMORY: TextRule = TextRule {
    expected: "a size with a unit such as `512m`, `1g`, `512Mi` or `2Gi`",
    pattern: "^[0-9]+(\\.[0-9]+)?\\s*([kKmMgGtT]([iI]?[bB]?)?|[bB])$",
    hint: "add a unit, for example `512m`",
    check: |text| parse_memory_bytes(text).map(|bytes| json!(bytes)),
};

pub const NAME: TextRule = TextRule {
    expected: "a name of letters, digits, `-`, `_` or `.`, starting with a letter or digit (at most 63 characters)",
    pattern: "^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$",
    hint: "use letters, digits, `-`, `_` and `.` only, for example `rivetos`",
    check: |text| {
        let mut chars = text.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
        let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        (first_ok && rest_ok && text.len() <= 63).then(|| json!(text))
    },
};

pub const HOST: TextRule = TextRule {
    expected: "a host name or address without whitespace or any of ;&|`$<>()'\"\\",
    pattern: "^[^\\s;&|`$<>()'\"\\\\]+$",
    hint: "use a plain host name or IP address",
    check: |text| is_safe_host(text).then(|| json!(text)),
};

pub const QUANTITY: TextRule = TextRule {
    expected: "a Kubernetes quantity such as `500m`, `2`, `512Mi` or `10Gi`",
    pattern: "^[0-9]+(\\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$",
    hint: "for example `500m` (CPU) or `1Gi` (memory)",
    check: |text| is_quantity(text).then(|| json!(text)),
};

/// A Kubernetes minor version, `1.20` … (what offline rendering targets).
pub const KUBE_VERSION: TextRule = TextRule {
    expected: "a Kubernetes version `1.MINOR` from 1.20 on, such as `1.33`",
    pattern: "^1\\.([2-9][0-9]|[1-9][0-9]{2,})$",
    hint: "for example `1.33`; rivetctl supports 1.20 and later",
    check: |text| kube_version(text).map(|_| json!(text)),
};

/// `1.33` → `(1, 33)`, for versions rivetctl supports (1.20 and later).
pub fn kube_version(text: &str) -> Option<(u32, u32)> {
    let (major, minor) = text.split_once('.')?;
    let digits = !minor.is_empty() && minor.bytes().all(|c| c.is_ascii_digit()) && !minor.starts_with('0');
    let minor: u32 = if major == "1" && digits { minor.parse().ok()? } else { return None };
    (minor >= 20).then_some((1, minor))
}

pub const ABS_PATH: TextRule = TextRule {
    expected: "an absolute path starting with `/`",
    pattern: "^/[^\\s]*$",
    hint: "start the path with `/`",
    check: |text| (text.starts_with('/') && !text.chars().any(char::is_whitespace)).then(|| json!(text)),
};

/// A URL path for HTTP health checks: it becomes one argument of `wget` in the container's
/// health check and the request line of rivetctl's probes, so only RFC 3986 path characters
/// are accepted, without the sub-delimiters a shell reads (`;`, `$`, `&`, quotes, parens).
pub const URL_PATH: TextRule = TextRule {
    expected: "an absolute URL path such as `/health/live` (letters, digits, `-._~/:@!*+,=` and `%XX` escapes)",
    pattern: "^/([A-Za-z0-9._~/:@!*+,=-]|%[0-9A-Fa-f]{2})*$",
    hint: "write the path only, for example `/health/live`; no query, no spaces or shell characters (percent-encode them, e.g. `%20`)",
    check: |text| is_url_path(text).then(|| json!(text)),
};

/// True for `/` followed by RFC 3986 path characters (see [`URL_PATH`]).
pub fn is_url_path(text: &str) -> bool {
    let bytes = text.as_bytes();
    if bytes.first() != Some(&b'/') || bytes.len() > 1024 {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let escape = bytes.get(i + 1..i + 3);
            if !escape.is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit)) {
                return false;
            }
            i += 3;
            continue;
        }
        if !(b.is_ascii_alphanumeric() || b"-._~/:@!*+,=".contains(&b)) {
            return false;
        }
        i += 1;
    }
    true
}

/// A git URL or path. git reads an argument starting with `-` as an option
/// (`--upload-pack=<command>` runs a command), so such a value is refused here, before any
/// git runs; rivetctl also passes it after `--`.
pub const GIT_URL: TextRule = TextRule {
    expected: "a git URL or path that does not start with `-`",
    pattern: "^[^-\\s][^\\s]*$",
    hint: "write the repository's URL, for example `https://github.com/philbert440/rivetos.git`",
    check: |text| is_git_argument(text).then(|| json!(text)),
};

/// A branch, tag or commit of `git`; refused when it starts with `-` (an option to git).
pub const GIT_REF: TextRule = TextRule {
    expected: "a branch, tag or commit that does not start with `-`",
    pattern: "^[^-\\s][^\\s]*$",
    hint: "for example `main`, `v1.4.0` or a commit id",
    check: |text| is_git_argument(text).then(|| json!(text)),
};

/// True for a non-empty value without whitespace that git cannot take for an option.
pub fn is_git_argument(text: &str) -> bool {
    !text.is_empty() && !text.starts_with('-') && !text.chars().any(|c| c.is_whitespace() || c.is_control())
}

pub const PG_VERSION: TextRule = TextRule {
    expected: "a PostgreSQL major version such as `16`",
    pattern: "^[0-9]{1,2}$",
    hint: "write the major version only, for example `16`",
    check: |text| {
        (!text.is_empty() && text.len() <= 2 && text.bytes().all(|b| b.is_ascii_digit())).then(|| json!(text))
    },
};

pub const PARALLEL: TextRule = TextRule {
    expected: "a positive number of agents such as `2`, or a percentage such as `25%`",
    pattern: "^[0-9]+%?$",
    hint: "use a number such as `1`, or a percentage such as `25%`",
    check: |text| {
        let (digits, percent) = match text.strip_suffix('%') {
            Some(d) => (d, true),
            None => (text, false),
        };
        let n: u32 = digits.parse().ok()?;
        let ok = n > 0 && (!percent || n <= 100);
        ok.then(|| json!(text))
    },
};

pub const ENDPOINT: TextRule = TextRule {
    expected: "`local`, `unix:///path`, `tcp://host:port` or `ssh://user@host[:port]`",
    pattern: "^(local|unix:///.+|tcp://[^\\s]+:[0-9]+|ssh://([^@\\s]+@)?[^\\s:]+(:[0-9]+)?)$",
    hint: "for example `ssh://deploy@10.0.0.2:22` or `local`",
    check: |text| parse_endpoint(text).is_some().then(|| json!(text)),
};

pub const CIDR: TextRule = TextRule {
    expected: "an IPv4 subnet such as `10.4.0.0/24`",
    pattern: "^[0-9.]+/[0-9]{1,2}$",
    hint: "for example `10.4.0.0/24`",
    check: |text| {
        let (ip, bits) = text.split_once('/')?;
        let bits: u8 = bits.parse().ok()?;
        (ip.parse::<std::net::Ipv4Addr>().is_ok() && bits <= 32).then(|| json!(text))
    },
};

pub const IP: TextRule = TextRule {
    expected: "an IPv4 address such as `10.4.0.1`",
    pattern: "^[0-9.]+$",
    hint: "for example `10.4.0.1`",
    check: |text| text.parse::<std::net::Ipv4Addr>().ok().map(|_| json!(text)),
};

pub const HTTPS_URL: TextRule = TextRule {
    expected: "an https:// URL such as `https://pve1:8006/api2/json` (TLS is always verified)",
    pattern: "^https://[^\\s]+$",
    hint: "for example `https://pve1:8006/api2/json`",
    check: |text| {
        let rest = text.strip_prefix("https://")?;
        (!rest.is_empty() && !rest.chars().any(char::is_whitespace)).then(|| json!(text))
    },
};

/// Parses `1h30m`, `30s`, `500ms` into milliseconds.
pub fn parse_duration_ms(text: &str) -> Option<u64> {
    let mut total: u64 = 0;
    let mut rest = text;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let number: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (factor, unit_len) = if rest.starts_with("ms") {
            (1, 2)
        } else if rest.starts_with('s') {
            (1_000, 1)
        } else if rest.starts_with('m') {
            (60_000, 1)
        } else if rest.starts_with('h') {
            (3_600_000, 1)
        } else {
            return None;
        };
        total = total.checked_add(number.checked_mul(factor)?)?;
        rest = &rest[unit_len..];
    }
    Some(total)
}

/// Parses `512m`, `1.5g`, `512Mi`, `2GiB`, `100b` into bytes (k/m/g are powers of 1024, as
/// Docker reads them).
pub fn parse_memory_bytes(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let unit = unit.trim().to_ascii_lowercase();
    let factor: f64 = match unit.as_str() {
        "b" => 1.0,
        "k" | "kb" | "ki" | "kib" => 1024.0,
        "m" | "mb" | "mi" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gi" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" | "ti" | "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let bytes = number * factor;
    (4.0 * 1024.0 * 1024.0..1e18).contains(&bytes).then_some(bytes as u64)
}

/// True for a host name/address that is safe to put on a command line.
pub fn is_safe_host(text: &str) -> bool {
    !text.is_empty() && !text.chars().any(|c| c.is_whitespace() || c.is_control() || SHELL_METACHARACTERS.contains(&c))
}

fn is_quantity(text: &str) -> bool {
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    !number.is_empty()
        && number.parse::<f64>().is_ok()
        && matches!(suffix, "" | "m" | "k" | "M" | "G" | "T" | "P" | "E" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei")
}

/// How a node's Docker Engine is reached.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `DOCKER_HOST` or the local socket.
    Local,
    Unix(String),
    Tcp {
        host: String,
        port: u16,
    },
    Ssh {
        user: Option<String>,
        host: String,
        port: u16,
    },
}

impl Endpoint {
    /// The host part, for endpoints on another machine.
    pub fn host(&self) -> Option<&str> {
        match self {
            Endpoint::Local | Endpoint::Unix(_) => None,
            Endpoint::Tcp { host, .. } | Endpoint::Ssh { host, .. } => Some(host),
        }
    }
}

/// How a `tcp://` engine is secured: a node's (or `deployment.docker`'s) `tls` and `insecure`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum TcpSecurity {
    /// Nothing configured: for an address from `DOCKER_HOST`, `DOCKER_TLS_VERIFY` and
    /// `DOCKER_CERT_PATH` apply as for the Docker CLI; a configured `tcp://` is refused.
    #[default]
    Unset,
    /// TLS: the server's certificate is checked against `ca` (and the host name), and `cert`
    /// with `key` is presented. Paths as written, relative to the config's directory.
    Tls { ca: String, cert: String, key: String },
    /// Plain HTTP, asked for in so many words (`insecure: true`).
    Insecure,
}

impl TcpSecurity {
    /// From the `tls` and `insecure` fields (the checker refuses a partial `tls`).
    pub fn of(tls: &super::model::EngineTls, insecure: bool) -> TcpSecurity {
        match (&tls.ca, &tls.cert, &tls.key) {
            (Some(ca), Some(cert), Some(key)) => {
                TcpSecurity::Tls { ca: ca.clone(), cert: cert.clone(), key: key.clone() }
            }
            _ if insecure => TcpSecurity::Insecure,
            _ => TcpSecurity::Unset,
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Local => f.write_str("local"),
            Endpoint::Unix(path) => write!(f, "unix://{path}"),
            Endpoint::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
            Endpoint::Ssh { user: Some(user), host, port } => write!(f, "ssh://{user}@{host}:{port}"),
            Endpoint::Ssh { user: None, host, port } => write!(f, "ssh://{host}:{port}"),
        }
    }
}

/// Parses `local`, `unix:///path`, `tcp://host:port`, `ssh://[user@]host[:port]`.
pub fn parse_endpoint(text: &str) -> Option<Endpoint> {
    if text == "local" {
        return Some(Endpoint::Local);
    }
    if let Some(path) = text.strip_prefix("unix://") {
        return (path.starts_with('/') && path.len() > 1).then(|| Endpoint::Unix(path.to_string()));
    }
    if let Some(rest) = text.strip_prefix("tcp://") {
        let (host, port) = rest.rsplit_once(':')?;
        let port: u16 = port.parse().ok()?;
        return (is_safe_host(host) && port > 0).then(|| Endpoint::Tcp { host: host.to_string(), port });
    }
    if let Some(rest) = text.strip_prefix("ssh://") {
        let rest = rest.trim_end_matches('/');
        let (user, hostport) = match rest.split_once('@') {
            Some((user, hostport)) => (Some(user), hostport),
            None => (None, rest),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((host, port)) => (host, port.parse::<u16>().ok().filter(|p| *p > 0)?),
            None => (hostport, 22),
        };
        let user_ok = user.is_none_or(|u| {
            !u.is_empty() && u.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        });
        return (user_ok && is_safe_host(host) && !host.contains('/')).then(|| Endpoint::Ssh {
            user: user.map(str::to_string),
            host: host.to_string(),
            port,
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("30s"), Some(30_000));
        assert_eq!(parse_duration_ms("1h30m"), Some(5_400_000));
        assert_eq!(parse_duration_ms("500ms"), Some(500));
        assert_eq!(parse_duration_ms("30"), None);
        assert_eq!(parse_duration_ms("s"), None);
        assert_eq!(parse_duration_ms(""), None);
    }

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory_bytes("512m"), Some(512 * 1024 * 1024));
        assert_eq!(parse_memory_bytes("2Gi"), Some(2 * 1024 * 1024 * 1024));
        assert_eq!(parse_memory_bytes("1.5g"), Some(1_610_612_736));
        assert_eq!(parse_memory_bytes("512"), None, "a unit is required");
        assert_eq!(parse_memory_bytes("1k"), None, "below Docker's 4 MiB minimum");
    }

    #[test]
    fn endpoints() {
        assert_eq!(
            parse_endpoint("ssh://deploy@10.0.0.2:2222"),
            Some(Endpoint::Ssh { user: Some("deploy".into()), host: "10.0.0.2".into(), port: 2222 })
        );
        assert_eq!(parse_endpoint("ssh://host"), Some(Endpoint::Ssh { user: None, host: "host".into(), port: 22 }));
        assert_eq!(parse_endpoint("tcp://h:2375"), Some(Endpoint::Tcp { host: "h".into(), port: 2375 }));
        assert_eq!(parse_endpoint("ssh://a;rm -rf@h"), None);
        assert_eq!(parse_endpoint("ssh://u@h;ls"), None);
        assert_eq!(parse_endpoint("http://h"), None);
    }

    #[test]
    fn url_paths_take_path_characters_only() {
        for good in ["/", "/health/live", "/a-b_c.d~e/%2Fx", "/v1:ping@x!*+,="] {
            assert!(is_url_path(good), "{good}");
        }
        for bad in [
            "",
            "health",
            "/health/live; touch /tmp/x",
            "/a;b",
            "/a b",
            "/a\tb",
            "/$(id)",
            "/`id`",
            "/a|b",
            "/a&b",
            "/a'b",
            "/a\"b",
            "/a<b>",
            "/a\\b",
            "/a?b=1",
            "/a#b",
            "/%zz",
            "/%2",
            "/ü",
        ] {
            assert!(!is_url_path(bad), "{bad:?}");
        }
    }

    #[test]
    fn git_arguments_never_look_like_options() {
        for good in ["https://github.com/o/r.git", "git@github.com:o/r.git", "../r", "main", "v1.0", "a1b2c3"] {
            assert!(is_git_argument(good), "{good}");
        }
        for bad in ["", "--upload-pack=touch /tmp/x", "-h", "--output=/tmp/x", "main branch", "a\nb"] {
            assert!(!is_git_argument(bad), "{bad:?}");
        }
    }

    #[test]
    fn hosts_refuse_shell_metacharacters() {
        assert!(is_safe_host("node-1.example.com"));
        for bad in ["a b", "a;b", "$(x)", "a`b`", "a|b", "a'b", "a\"b", "a\\b", ""] {
            assert!(!is_safe_host(bad), "{bad}");
        }
    }
}
