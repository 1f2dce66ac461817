//! The named string formats of the PVE API schema (`"format": "pve-node"` and friends), written
//! after the verifiers that Proxmox registers with `register_format` in pve-common
//! (`PVE/JSONSchema.pm`, `PVE/ParseUtils.pm`), pve-container (`PVE/LXC/Config.pm`),
//! pve-storage and pve-access-control. The messages are PVE's own, trailing newline included,
//! because PVE puts the text of the verifier's `die` into the `errors` map verbatim.
//!
//! A format the fake does not know is an error naming it (PVE: "undefined format"), so a schema
//! update that brings a new format fails loudly instead of passing values unchecked.

use std::sync::OnceLock;

use regex::Regex;

/// Checks `value` against the named format, with PVE's `-list` (split on `,;` and white space,
/// or on NUL) and `-opt` (empty is fine) suffixes.
pub(crate) fn check(format: &str, value: &str) -> Result<(), String> {
    let (base, kind) = match format.rsplit_once('-') {
        Some((base, "list")) if known(base) => (base, "list"),
        Some((base, "opt")) if known(base) => (base, "opt"),
        _ => (format, ""),
    };
    if !known(base) {
        return Err(format!("undefined format '{format}'\n"));
    }
    match kind {
        // PVE allows empty lists.
        "list" => split_list(value).into_iter().try_for_each(|item| single(base, item)),
        "opt" if value.is_empty() => Ok(()),
        _ => single(base, value),
    }
}

/// PVE's `split_list`: NUL-separated if there is a NUL, else on `,`, `;` and white space.
pub(crate) fn split_list(text: &str) -> Vec<&str> {
    if text.contains('\0') {
        return text.split('\0').collect();
    }
    text.split([',', ';', ' ', '\t', '\n', '\r']).filter(|item| !item.is_empty()).collect()
}

const KNOWN: &[&str] = &[
    "string",
    "urlencoded",
    "pve-configid",
    "pve-storage-id",
    "pve-bridge-id",
    "pve-vmid",
    "pve-node",
    "mac-addr",
    "ipv4",
    "ipv6",
    "ip",
    "ipv4mask",
    "CIDRv4",
    "CIDRv6",
    "CIDR",
    "pve-ipv4-config",
    "pve-ipv6-config",
    "email",
    "email-or-username",
    "dns-name",
    "timezone",
    "pve-iface",
    "address",
    "disk-size",
    "pve-startup-order",
    "pve-tag",
    "pve-poolid",
    "pve-volume-id",
    "pve-volume-id-or-qm-path",
    "pve-ct-timezone",
    "pve-lxc-mp-string",
    "pve-lxc-dev-string",
    "lxc-ip-with-ll-iface",
];

fn known(name: &str) -> bool {
    KNOWN.contains(&name)
}

fn anchored(pattern: &str) -> Regex {
    Regex::new(&format!("^(?:{pattern})$")).expect("a format's own pattern compiles")
}

/// `$IPV4RE` of PVE::ParseUtils (no leading zeros in an octet).
fn ipv4_re() -> &'static str {
    static RE: OnceLock<String> = OnceLock::new();
    RE.get_or_init(|| {
        let octet = "(?:25[0-5]|(?:2[0-4]|1[0-9]|[1-9])?[0-9])";
        format!("(?:(?:{octet}\\.){{3}}{octet})")
    })
}

/// `$IPV6RE` of PVE::ParseUtils, alternative by alternative.
fn ipv6_re() -> &'static str {
    static RE: OnceLock<String> = OnceLock::new();
    RE.get_or_init(|| {
        let h16 = "(?:[0-9a-fA-F]{1,4})";
        let ls32 = format!("(?:(?:{}|{h16}:{h16}))", ipv4_re());
        let alternatives = [
            format!("(?:(?:(?:{h16}:){{6}}){ls32})"),
            format!("(?:(?:::(?:{h16}:){{5}}){ls32})"),
            format!("(?:(?:(?:{h16})?::(?:{h16}:){{4}}){ls32})"),
            format!("(?:(?:(?:(?:{h16}:){{0,1}}{h16})?::(?:{h16}:){{3}}){ls32})"),
            format!("(?:(?:(?:(?:{h16}:){{0,2}}{h16})?::(?:{h16}:){{2}}){ls32})"),
            format!("(?:(?:(?:(?:{h16}:){{0,3}}{h16})?::(?:{h16}:){{1}}){ls32})"),
            format!("(?:(?:(?:(?:{h16}:){{0,4}}{h16})?::){ls32})"),
            format!("(?:(?:(?:(?:{h16}:){{0,5}}{h16})?::){h16})"),
            format!("(?:(?:(?:(?:{h16}:){{0,6}}{h16})?::))"),
        ];
        format!("(?:{})", alternatives.join("|"))
    })
}

fn is_ipv4(text: &str) -> bool {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| anchored(ipv4_re())).is_match(text)
}

fn is_ipv6(text: &str) -> bool {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| anchored(ipv6_re())).is_match(text)
}

/// `<address>/<bits>` with PVE's bounds: more than 7 bits, at most the address length.
fn is_cidr(text: &str, v6: bool) -> bool {
    let Some((ip, bits)) = text.split_once('/') else { return false };
    let max = if v6 { 128 } else { 32 };
    let ip_ok = if v6 { is_ipv6(ip) } else { is_ipv4(ip) };
    ip_ok
        && !bits.is_empty()
        && bits.bytes().all(|b| b.is_ascii_digit())
        && bits.parse::<u32>().is_ok_and(|b| b > 7 && b <= max)
}

fn is_dns_name(text: &str) -> bool {
    static RE: OnceLock<Regex> = OnceLock::new();
    let name = r"([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?)";
    RE.get_or_init(|| anchored(&format!(r"({name}\.)*{name}"))).is_match(text)
}

fn matches(pattern: &'static str, text: &str) -> bool {
    // Few and small: compiled on use (the server sees a handful of requests per test).
    anchored(pattern).is_match(text)
}

/// PVE::JSONSchema::parse_size.
pub(crate) fn parse_size(text: &str) -> Option<u64> {
    let re = anchored(r"(\d+(?:\.\d+)?)([KMGT](?:iB)?)?");
    let caps = re.captures(text)?;
    let number: f64 = caps[1].parse().ok()?;
    let unit = caps.get(2).map_or("", |m| &m.as_str()[..1]);
    let factor = match unit {
        "K" => 1u64 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => 1,
    };
    Some((number * factor as f64) as u64)
}

/// pve_parse_startup_order: `[order=]N`, `up=N`, `down=N`, comma-separated, not empty.
fn is_startup_order(text: &str) -> bool {
    !text.is_empty()
        && text.split(',').filter(|p| !p.trim().is_empty()).all(|p| {
            let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
            digits(p.strip_prefix("order=").unwrap_or(p))
                || p.strip_prefix("up=").is_some_and(digits)
                || p.strip_prefix("down=").is_some_and(digits)
        })
}

/// A zone of the host's `zone.tab`, as PVE's `pve_verify_timezone` reads it, or `UTC`.
fn is_timezone(text: &str) -> bool {
    static ZONES: OnceLock<Option<Vec<String>>> = OnceLock::new();
    let zones = ZONES.get_or_init(|| {
        let tab = std::fs::read_to_string("/usr/share/zoneinfo/zone.tab").ok()?;
        let zones = tab.lines().filter(|l| !l.trim_start().starts_with('#'));
        Some(zones.filter_map(|l| l.split('\t').nth(2)).map(str::to_string).collect())
    });
    text == "UTC"
        || match zones {
            Some(zones) => zones.iter().any(|z| z == text),
            // No tzdata on this machine: at least the shape of an Area/Location name.
            None => matches(r"[A-Za-z]+(/[A-Za-z0-9_+\-]+)+", text),
        }
}

/// PVE::Storage::parse_volume_id: `<storage id>:<volume name>`.
pub(crate) fn is_volume_id(text: &str) -> bool {
    text.split_once(':').is_some_and(|(storage, name)| is_storage_id(storage) && !name.is_empty())
}

fn is_storage_id(text: &str) -> bool {
    text.len() >= 2 && matches(r"(?i:[a-z][a-z0-9\-_.]*[a-z0-9])", text)
}

fn is_email_user(text: &str) -> bool {
    matches(r"[\w+\-~]+(\.[\w+\-~]+)*", text)
}

fn is_email(text: &str) -> bool {
    text.split_once('@')
        .is_some_and(|(user, host)| is_email_user(user) && matches(r"[a-zA-Z0-9\-]+(\.[a-zA-Z0-9\-]+)*", host))
}

fn single(format: &str, v: &str) -> Result<(), String> {
    let (ok, message) = match format {
        "string" => (true, String::new()),
        "urlencoded" => (matches(r"[-%a-zA-Z0-9_.!~*'()]*", v), format!("invalid urlencoded string: {v}")),
        "pve-configid" => (matches(r"(?i:[a-z][a-z0-9_-]+)", v), format!("invalid configuration ID '{v}'")),
        "pve-storage-id" => {
            if v.len() < 2 {
                return Err(format!("storage ID '{v}' cannot be shorter than 2 characters\n"));
            }
            (is_storage_id(v), format!("storage ID '{v}' contains illegal characters"))
        }
        "pve-bridge-id" => (matches(r"[-_.\w\d]+", v), format!("invalid bridge ID '{v}'")),
        "pve-vmid" => (matches(r"[1-9][0-9]{2,8}", v), "value does not look like a valid VM ID".into()),
        "pve-node" => (
            matches(r"[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?", v),
            "value does not look like a valid node name".into(),
        ),
        "mac-addr" => (
            matches(r"(?i:[a-f0-9][02468ace](?::[a-f0-9]{2}){5})", v),
            "value does not look like a valid unicast MAC address".into(),
        ),
        "ipv4" => (is_ipv4(v), "value does not look like a valid IPv4 address".into()),
        "ipv6" => (is_ipv6(v), "value does not look like a valid IPv6 address".into()),
        "ip" => (is_ipv4(v) || is_ipv6(v), "value does not look like a valid IP address".into()),
        "ipv4mask" => {
            let bits = v.parse::<std::net::Ipv4Addr>().map(u32::from);
            let ok = is_ipv4(v) && bits.is_ok_and(|b| b.leading_ones() + b.trailing_zeros() == 32);
            (ok, "value does not look like a valid IP netmask".into())
        }
        "CIDRv4" => (is_cidr(v, false), "value does not look like a valid IPv4 CIDR network".into()),
        "CIDRv6" => (is_cidr(v, true), "value does not look like a valid IPv6 CIDR network".into()),
        "CIDR" => (is_cidr(v, false) || is_cidr(v, true), "value does not look like a valid CIDR network".into()),
        "pve-ipv4-config" => (
            matches!(v, "dhcp" | "manual") || is_cidr(v, false),
            "value does not look like a valid ipv4 network configuration".into(),
        ),
        "pve-ipv6-config" => (
            matches!(v, "auto" | "dhcp" | "manual") || is_cidr(v, true),
            "value does not look like a valid ipv6 network configuration".into(),
        ),
        "email" => (is_email(v), "value does not look like a valid email address".into()),
        "email-or-username" => {
            (is_email(v) || is_email_user(v), "value does not look like a valid email address or user name".into())
        }
        "dns-name" => (is_dns_name(v), "value does not look like a valid DNS name".into()),
        "timezone" => (is_timezone(v), format!("invalid time zone '{v}'")),
        "pve-ct-timezone" => (v == "host" || is_timezone(v), format!("invalid time zone '{v}'")),
        "pve-iface" => {
            (matches(r"(?i:[a-z][a-z0-9_]{1,20}([:.]\d+)?)", v), format!("invalid network interface name '{v}'"))
        }
        "address" => {
            (is_ipv4(v) || is_ipv6(v) || is_dns_name(v), format!("value does not look like a valid address: {v}"))
        }
        "disk-size" => (parse_size(v).is_some(), format!("value does not look like a valid disk size: {v}")),
        "pve-startup-order" => (is_startup_order(v), "unable to parse startup options".into()),
        "pve-tag" => (matches(r"(?i:[a-z0-9_][a-z0-9_\-+.]*)", v), "invalid characters in tag".into()),
        // pve-access-control's verify_poolname (nested pools: up to three levels).
        "pve-poolid" => (
            matches(r"[A-Za-z0-9.\-_]+(?:/[A-Za-z0-9.\-_]+){0,2}", v),
            format!("pool name '{v}' contains invalid characters"),
        ),
        "pve-volume-id" => (is_volume_id(v), format!("unable to parse volume ID '{v}'")),
        "pve-volume-id-or-qm-path" => (
            matches!(v, "none" | "cdrom") || v.starts_with('/') || is_volume_id(v),
            format!("unable to parse volume ID '{v}'"),
        ),
        "pve-lxc-mp-string" => (
            !(matches(r".*/\.\.?/.*", v) || matches(r".*/\.\.?", v) || v.starts_with("../")),
            format!("{v} contains illegal character sequences"),
        ),
        "pve-lxc-dev-string" => {
            (!matches(r".*/\.\.?(/.*)?", v) && v.starts_with("/dev/"), format!("{v} is not a valid device path"))
        }
        "lxc-ip-with-ll-iface" => {
            let link_local = v.split_once('%').is_some_and(|(addr, iface)| {
                addr.starts_with("fe80:") && is_ipv6(addr) && single("pve-iface", iface).is_ok()
            });
            (link_local || is_ipv4(v) || is_ipv6(v), "value does not look like a valid IP address".into())
        }
        other => return Err(format!("undefined format '{other}'\n")),
    };
    if ok { Ok(()) } else { Err(format!("{message}\n")) }
}
