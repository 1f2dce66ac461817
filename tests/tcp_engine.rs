//! `tcp://` engines end to end: the machine's Docker Engine behind a socat TLS front (as
//! `dockerd --tlsverify -H tcp://` serves it), reached by the `rivetctl` binary with client
//! certificates from the config or from `DOCKER_CERT_PATH`; plain `tcp://` refused unless
//! `insecure: true`, and then warned about; and a rollout whose health gate passes from a
//! network namespace where the engine's container addresses do not route.

mod support;

#[path = "../targets/tests/tls_front/mod.rs"]
mod tls_front;

use std::path::Path;
use std::process::{Command, Output};

use support::describe;
use support::docker::{TestFleet, docker};
use tls_front::{Certs, Front};

/// Copies the test certificates into the fleet's directory (`certs/`), so the config refers
/// to them relative to itself.
fn install_certs(fleet: &TestFleet, certs: &Certs) {
    let dir = fleet.dir.path().join("certs");
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["ca.pem", "cert.pem", "key.pem", "other-ca.pem"] {
        std::fs::copy(certs.path(name), dir.join(name)).unwrap();
    }
}

/// Points the fleet's single node at `host` with extra `deployment.docker` lines (and makes
/// its `.env` private, which `doctor` checks).
fn use_engine(fleet: &TestFleet, host: &str, extra: &str) {
    private_env(fleet);
    fleet.edit(|text| text.replacen("  docker:\n", &format!("  docker:\n    host: \"{host}\"\n{extra}"), 1));
}

fn private_env(fleet: &TestFleet) {
    use std::os::unix::fs::PermissionsExt;
    let env = fleet.dir.path().join(".env");
    if env.exists() {
        std::fs::set_permissions(env, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

const TLS: &str = "    tls: {ca: certs/ca.pem, cert: certs/cert.pem, key: certs/key.pem}\n";

fn text(output: &Output) -> (String, String) {
    (String::from_utf8_lossy(&output.stdout).into_owned(), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn doctor_reaches_a_tls_engine_with_the_configured_client_certificate() {
    let fleet = TestFleet::new("tls-doctor");
    let certs = Certs::new();
    install_certs(&fleet, &certs);
    let front = Front::tls(&certs, "server", &[]);
    let address = format!("tcp://127.0.0.1:{}", front.port);
    use_engine(&fleet, &address, TLS);
    let output = fleet.expect(&["doctor"], 0);
    let (stdout, stderr) = text(&output);
    assert!(stdout.contains("engine local") && stdout.contains(&format!("{address} (Docker ")), "{stdout}");
    assert!(!stderr.contains("plain HTTP"), "{stderr}");

    // The engine's certificate is checked against the configured CA only.
    fleet.edit(|text| text.replace("ca: certs/ca.pem", "ca: certs/other-ca.pem"));
    let output = fleet.expect(&["doctor"], 1);
    let (stdout, _) = text(&output);
    assert!(stdout.contains("FAIL engine local"), "{}", describe(&output));
    assert!(stdout.contains("invalid peer certificate") && stdout.contains("not signed by"), "{}", describe(&output));
}

#[test]
fn docker_host_uses_docker_tls_verify_and_docker_cert_path() {
    let fleet = TestFleet::new("tls-env");
    let certs = Certs::new();
    let front = Front::tls(&certs, "server", &[]);
    let address = format!("tcp://127.0.0.1:{}", front.port);
    private_env(&fleet);
    let mut command = fleet.command(&["doctor"]);
    command.env("DOCKER_HOST", &address).env("DOCKER_TLS_VERIFY", "1").env("DOCKER_CERT_PATH", certs.dir());
    let output = support::run(&mut command);
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    assert!(text(&output).0.contains(&format!("{address} (Docker ")), "{}", describe(&output));

    // Without DOCKER_TLS_VERIFY, DOCKER_HOST=tcp:// would be plain HTTP: refused, with the way out.
    let mut command = fleet.command(&["doctor"]);
    command.env("DOCKER_HOST", &address);
    let output = support::run(&mut command);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let (stdout, _) = text(&output);
    assert!(stdout.contains("refusing plain HTTP"), "{stdout}");
    assert!(stdout.contains("DOCKER_TLS_VERIFY=1") && stdout.contains("insecure: true"), "{stdout}");
}

#[test]
fn plain_tcp_is_refused_without_the_opt_in_and_warned_about_with_it() {
    let fleet = TestFleet::new("tcp-plain");
    let front = Front::plain(&[]);
    let address = format!("tcp://127.0.0.1:{}", front.port);
    use_engine(&fleet, &address, "");
    for args in [&["config", "validate"][..], &["infra", "preview"]] {
        let output = fleet.expect(args, 1);
        let (_, stderr) = text(&output);
        assert!(stderr.contains(&format!("is reached at {address} without TLS")), "{stderr}");
        assert!(stderr.contains("hint:") && stderr.contains("tls: {ca: ca.pem"), "{stderr}");
    }
    fleet.edit(|text| text.replace(&format!("{address}\"\n"), &format!("{address}\"\n    insecure: true\n")));
    // Warned on every run that connects, quiet or not.
    for args in [&["doctor"][..], &["-q", "infra", "preview"]] {
        let output = fleet.rivetctl(args);
        let (_, stderr) = text(&output);
        assert!(output.status.code() == Some(0) || output.status.code() == Some(2), "{}", describe(&output));
        assert!(
            stderr.contains(&format!("warning: node local: speaking plain HTTP to the Docker Engine at {address}")),
            "{}",
            describe(&output)
        );
    }
}

/// A network namespace of its own with only loopback up: the engine's bridge networks (and
/// so the container addresses) do not route from inside it. Deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn new() -> Netns {
        let name = format!("rivet-tcp-{}-{}", std::process::id(), tls_front::free_port());
        let netns = Netns { name };
        netns.ip(&["netns", "add", &netns.name]);
        netns.ip(&["netns", "exec", &netns.name, "ip", "link", "set", "lo", "up"]);
        netns
    }

    fn ip(&self, args: &[&str]) {
        let output = Command::new("ip").args(args).output().expect("ip (iproute2)");
        assert!(output.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&output.stderr));
    }

    /// `ip netns exec NAME`, for [`Front`].
    fn wrapper(&self) -> [&str; 4] {
        ["ip", "netns", "exec", &self.name]
    }

    /// rivetctl on `fleet`, run inside the namespace, with the environment `support` gives it.
    fn rivetctl(&self, fleet: &TestFleet, args: &[&str]) -> Output {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name, env!("CARGO_BIN_EXE_rivetctl")]);
        command.arg("-c").arg(fleet.config()).args(args).current_dir(fleet.dir.path()).env_clear();
        for keep in ["PATH", "HOME", "TMPDIR", "XDG_CACHE_HOME"] {
            if let Some(value) = std::env::var_os(keep) {
                command.env(keep, value);
            }
        }
        support::run(command.env("NO_COLOR", "1"))
    }

    /// Whether `address` routes from inside the namespace.
    fn routes(&self, address: &str) -> bool {
        Command::new("ip")
            .args(["netns", "exec", &self.name, "ip", "route", "get", address])
            .output()
            .is_ok_and(|o| o.status.success())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "delete", &self.name]).output();
    }
}

fn bump(dir: &Path, version: &str) {
    let path = dir.join("package.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let start = text.find("\"version\": \"").unwrap() + 12;
    let end = start + text[start..].find('"').unwrap();
    std::fs::write(&path, format!("{}{version}{}", &text[..start], &text[end..])).unwrap();
}

#[test]
fn the_health_gate_of_a_tcp_node_passes_where_its_containers_do_not_route() {
    let fleet = TestFleet::new("tcp-gate");
    let certs = Certs::new();
    install_certs(&fleet, &certs);
    let netns = Netns::new();
    let front = Front::tls(&certs, "server", &netns.wrapper());
    use_engine(&fleet, &format!("tcp://127.0.0.1:{}", front.port), TLS);
    // A gate that cannot pass fails in 40 s, not the default 5 minutes.
    fleet.edit(|text| text.replacen("  update:\n", "  update:\n    healthy_deadline: 40s\n", 1));

    let up = netns.rivetctl(&fleet, &["infra", "up", "--yes"]);
    assert_eq!(up.status.code(), Some(0), "infra up:\n{}", describe(&up));
    fleet.assert_healthy(&["opus", "grok"]);
    let agent = fleet.agent("opus");
    let ip = docker(&["inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", &agent]);
    let ip = ip.split_whitespace().next().expect("the agent has an address").to_string();
    assert!(!netns.routes(&ip), "{ip} routes from the namespace: the test would prove nothing");

    bump(fleet.dir.path(), "9.9.9-tcp");
    let update = netns.rivetctl(&fleet, &["update"]);
    assert_eq!(update.status.code(), Some(0), "update:\n{}", describe(&update));
    for id in ["opus", "grok"] {
        let version = docker(&[
            "inspect",
            "--format",
            "{{index .Config.Labels \"org.opencontainers.image.version\"}} {{.State.Health.Status}}",
            &fleet.agent(id),
        ]);
        assert_eq!(version.trim(), "9.9.9-tcp healthy", "agent {id}");
    }
}
