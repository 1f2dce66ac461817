//! The systemd units: golden files, no secrets, and `systemd-analyze verify` on every unit.

mod support;

use std::path::Path;

use rivet_targets::render::systemd;
use support::{fleet, golden, run_tool, secret_values};

const PROXMOX: &str = r#"
deployment:
  target: proxmox
  proxmox:
    api_url: https://pve1.example.net:8006/api2/json
    nodes:
      - { name: pve1, host: 10.0.0.11, role: both }
      - { name: pve2, host: 10.0.0.12, role: agents }
  env: { LOG_LEVEL: "info", GREETING: "100% \"quoted\" \\ path" }
  agents:
    opus:
      env: { MODEL_HINT: large }
  update:
    stop_grace_period: 45s
agents:
  opus: { provider: anthropic }
  grok: { provider: xai }
  gemini: { provider: google }
"#;

const MANUAL: &str = r#"
deployment:
  target: manual
  datahub: { shared_storage: false }
agents:
  opus: { provider: anthropic }
"#;

fn units(source: &str) -> Vec<(String, String)> {
    systemd::artifacts(&fleet(source))
        .expect("renders")
        .into_iter()
        .map(|a| {
            assert!(!a.secret, "{} is not secret", a.path);
            (a.path, a.contents)
        })
        .collect()
}

#[test]
fn proxmox_nodes_match_golden_files() {
    let units = units(PROXMOX);
    let paths: Vec<&str> = units.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        ["systemd/pve1/rivetos-migrate.service", "systemd/pve1/rivetos.service", "systemd/pve2/rivetos.service"]
    );
    for (path, text) in &units {
        golden(path, text);
    }
    assert_eq!(units, self::units(PROXMOX), "deterministic");
}

#[test]
fn manual_host_matches_golden_files() {
    for (path, text) in units(MANUAL) {
        golden(&path.replace("systemd/", "systemd-manual/"), &text);
    }
}

#[test]
fn other_targets_get_no_units() {
    assert!(units(&PROXMOX.replace("target: proxmox", "target: docker")).is_empty());
}

#[test]
fn units_hold_no_secret_and_only_common_plain_values() {
    for (path, text) in units(PROXMOX) {
        for secret in secret_values() {
            assert!(!text.contains(&secret), "{path} holds a secret");
        }
        assert!(!text.contains("RIVETOS_PG_URL") && !text.contains("POSTGRES_PASSWORD"), "{path}");
        assert_eq!(text.contains("Environment=\"LOG_LEVEL=info\""), path.ends_with("/rivetos.service"), "{path}");
        // Set for one agent only: a process serving several agents cannot have it.
        assert!(!text.contains("MODEL_HINT"), "{path}");
    }
    let pve1 = &units(PROXMOX)[1].1;
    assert!(pve1.contains("Environment=\"RIVETOS_AGENTS=gemini,opus\""), "{pve1}");
    assert!(pve1.contains("Environment=\"GREETING=100%% \\\"quoted\\\" \\\\ path\""), "{pve1}");
    assert!(pve1.contains("TimeoutStopSec=45\n"));
}

#[test]
fn quoting_for_environment_lines() {
    assert_eq!(systemd::quote_environment("A", "b c"), "\"A=b c\"");
    assert_eq!(systemd::quote_environment("A", "50%\n\"x\"\\"), "\"A=50%%\\n\\\"x\\\"\\\\\"");
}

/// Runs `systemd-analyze verify` in a scratch root holding the units, an executable at the
/// `ExecStart` path, and a copy of the host's system units (the targets the units order
/// against). Returns whether it passed and what it said: unknown keys are only warnings to
/// systemd, so any output counts as a failure.
fn analyze(units: &[(String, String)]) -> (bool, String) {
    let root = tempfile::tempdir().unwrap();
    let unit_dir = root.path().join("etc/systemd/system");
    std::fs::create_dir_all(&unit_dir).unwrap();
    let system_units = Path::new("/usr/lib/systemd/system");
    assert!(system_units.is_dir(), "{} is missing: install systemd", system_units.display());
    copy_dir(system_units, &root.path().join("usr/lib/systemd/system"));
    let exec = root.path().join(systemd::EXEC.trim_start_matches('/'));
    std::fs::create_dir_all(exec.parent().unwrap()).unwrap();
    std::fs::write(&exec, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&exec, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut names = Vec::new();
    for (path, text) in units {
        let name = Path::new(path).file_name().unwrap().to_str().unwrap().to_string();
        std::fs::write(unit_dir.join(&name), text).unwrap();
        names.push(name);
    }
    let root_arg = format!("--root={}", root.path().display());
    let mut args = vec!["verify", "--man=no", "--generators=no", root_arg.as_str()];
    args.extend(names.iter().map(String::as_str));
    let output = run_tool("systemd-analyze", &args, None, "install systemd (Debian: apt-get install systemd)");
    let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success() && said.trim().is_empty(), said)
}

fn verify(units: &[(String, String)]) {
    let (ok, said) = analyze(units);
    assert!(ok, "systemd-analyze verify rejected {:?}:\n{said}", units.iter().map(|u| &u.0).collect::<Vec<_>>());
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            copy_dir(&entry.path(), &target);
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path()).unwrap(), &target).unwrap();
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[test]
fn systemd_analyze_verifies_every_unit() {
    let proxmox = units(PROXMOX);
    verify(&proxmox[..2]);
    verify(&proxmox[2..]);
    verify(&units(MANUAL));
}

/// The check can fail: a misspelt setting and a missing program are reported.
#[test]
fn systemd_analyze_catches_mistakes() {
    let unit = units(MANUAL).pop().unwrap();
    let misspelt = (unit.0.clone(), unit.1.replace("NoNewPrivileges=yes", "NoNewPrivilege=yes"));
    assert!(!analyze(&[misspelt]).0);
    let missing = (unit.0.clone(), unit.1.replace(systemd::EXEC, "/opt/rivetos/bin/missing"));
    assert!(!analyze(&[missing]).0);
}
