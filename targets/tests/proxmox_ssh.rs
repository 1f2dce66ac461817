//! SSH into a Proxmox VE container with the host keys its create task printed, read over the
//! pinned API (`containers::host_keys_in`, `SshOptions::pinned`), and what is provisioned
//! there (`proxmox::provision`): against the fake API with its Docker stand-ins (a real sshd
//! on the container's address, with the host keys the fake generated at create; runit as
//! PID 1, the service manager that runs here). No known_hosts file is involved; a key that
//! is not pinned is refused.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use orchestrator::config::rules::{Endpoint, TcpSecurity};
use rivet_targets::proxmox::client::{Client, Deadlines};
use rivet_targets::proxmox::containers::{self, Created};
use rivet_targets::proxmox::provision::{self, ServiceManager};
use rivet_targets::proxmox::release;
use rivet_targets::proxmox::task::Token;
use rivet_targets::proxmox::tls::{Trust, parse_fingerprint};
use rivet_targets::ssh::{SshError, SshOptions, connect};
use testkit::proxmox::standin::DockerStandins;
use testkit::proxmox::{FakePve, Options, Runtime};

/// A free port on `ip` a moment ago.
fn free_port(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0)).unwrap().local_addr().unwrap().port()
}

fn options(key: &Path, pinned: Vec<String>) -> SshOptions {
    SshOptions {
        pinned: Some(pinned),
        identity_file: Some(key.to_path_buf()),
        connect_timeout: Duration::from_secs(10),
        command_timeout: Duration::from_secs(30),
        ..SshOptions::new("/nonexistent/known_hosts")
    }
}

/// A started container on the fake (vmid 410, its own loopback address), reached by SSH.
struct Ct {
    pve: FakePve,
    _standins: Arc<DockerStandins>,
    client: Client,
    ip: String,
    port: u16,
    key: PathBuf,
    host_keys: Vec<String>,
    _dir: tempfile::TempDir,
}

async fn container(label: &str, second_octet: u8) -> Ct {
    // A loopback address of this test's own (127.0.0.0/8 is all local).
    let ip = format!("127.{second_octet}.{}.10", std::process::id() % 250);
    let port = free_port(&ip);
    let standins = Arc::new(DockerStandins::new(&format!("{label}{}", std::process::id()), port).unwrap());
    let runtime: Arc<dyn Runtime> = standins.clone();
    let options_pve =
        Options { task_duration: Duration::from_millis(30), runtime: Some(runtime), ..Options::default() };
    let pve = FakePve::start(options_pve).await.unwrap();
    let pin = parse_fingerprint(&pve.fingerprint()).unwrap();
    let token = Token::new(pve.token_id(), pve.token_secret()).unwrap();
    let deadlines = Deadlines { pause: Duration::from_millis(20), ..Deadlines::default() };
    let client = Client::new(&pve.url(), &Trust::Fingerprint(pin), token, deadlines).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let (key, public) = testkit::proxmox::raw::keypair(dir.path(), "id_ed25519");
    let params: BTreeMap<String, String> = [
        ("vmid", "410".to_string()),
        ("hostname", "home-agents-pve1".to_string()),
        ("ostemplate", "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst".to_string()),
        ("rootfs", "local-lvm:8".to_string()),
        ("net0", format!("name=eth0,bridge=vmbr0,ip={ip}/24")),
        ("unprivileged", "1".to_string()),
        ("features", "nesting=1".to_string()),
        ("tags", containers::tags("home", "agents-pve1", "abc")),
        ("ssh-public-keys", public),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let created = containers::create(&client, "home", "agents-pve1", "pve1", &params).await.unwrap();
    let Created::Done { host_keys, .. } = created else { panic!("{created:?}") };
    containers::ensure_running(&client, "pve1", 410, "home-agents-pve1").await.unwrap();
    Ct { pve, _standins: standins, client, ip, port, key, host_keys, _dir: dir }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_is_reached_with_the_host_keys_its_create_task_printed() {
    let ct = container("ssh", 93).await;
    let (ip, port, key, host_keys) = (&ct.ip, ct.port, &ct.key, &ct.host_keys);
    assert_eq!(host_keys.len(), 2, "ed25519 and rsa: {host_keys:?}");

    let session = connect(ip, port, "root", &options(key, host_keys.clone())).await.unwrap_or_else(|e| {
        panic!("{e}\nhint: {}", e.hint());
    });
    let out = session.exec("echo hello; id -u; hostname").await.unwrap();
    assert!(out.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n0\nhome-agents-pve1\n");
    session.close().await.unwrap();

    // Any other key is refused, naming what was seen and what was pinned.
    let elsewhere = vec!["SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".to_string()];
    let err = connect(ip, port, "root", &options(key, elsewhere)).await.unwrap_err();
    assert!(matches!(&err, SshError::NotPinned { fingerprint, .. } if host_keys.contains(fingerprint)), "{err}");
    assert!(err.hint().contains("create task"), "{}", err.hint());

    containers::destroy(&ct.client, "pve1", 410, "home-agents-pve1", 10).await.unwrap();
    assert!(ct.pve.container(410).is_none());
}

/// The example's agent image, built from examples/quickstart on this machine's engine (the
/// legacy builder, FROM the local base image), as a release (`release::from_image`); with
/// `FAIL_HEALTH` added when `broken` (the example's knob: its health endpoints answer 503).
async fn release(broken: bool) -> Vec<u8> {
    static BUILT: tokio::sync::OnceCell<Vec<u8>> = tokio::sync::OnceCell::const_new();
    let good = BUILT
        .get_or_init(|| async {
            let source = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/quickstart");
            let tag = format!("rivet-proxmox-release-test:{}", std::process::id());
            let out = std::process::Command::new("docker")
                .args(["build", "-q", "-f", "containers/agent/Dockerfile", "-t", &tag, "."])
                .env("DOCKER_BUILDKIT", "0")
                .current_dir(&source)
                .output()
                .expect("the docker CLI");
            assert!(
                out.status.success(),
                "building the example's agent image (is rivetos-base:busybox there? examples/base-image/build.sh): {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let engine = rivet_targets::docker::connect("local", &Endpoint::Local, &TcpSecurity::Unset).await.unwrap();
            let tarball = release::from_image(&engine, &tag).await.unwrap();
            let _ = std::process::Command::new("docker").args(["rmi", "-f", &tag]).output();
            tarball
        })
        .await;
    if !broken {
        return good.clone();
    }
    let mut builder = tar::Builder::new(Vec::new());
    for entry in tar::Archive::new(good.as_slice()).entries().unwrap() {
        let mut entry = entry.unwrap();
        let mut header = entry.header().clone();
        let path = entry.path().unwrap().into_owned();
        builder.append_data(&mut header, path, &mut entry).unwrap();
    }
    let mut header = tar::Header::new_gnu();
    header.set_size(7);
    header.set_mode(0o644);
    header.set_cksum();
    builder.append_data(&mut header, "FAIL_HEALTH", &b"broken\n"[..]).unwrap();
    builder.into_inner().unwrap()
}

/// Polls the agent's health on `port` until `want(live, status)`, up to 30 s.
async fn until_health(session: &rivet_targets::ssh::Session, port: u16, want: impl Fn(bool, Option<&str>) -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (live, status) = provision::health(session, port).await;
        if want(live, status.as_deref()) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "health on {port}: live {live}, status {status:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The pid runit supervises for `agent`.
async fn pid(session: &rivet_targets::ssh::Session, agent: &str) -> String {
    let out = session.exec(&format!("cat /etc/service/rivetos@{agent}/supervise/pid")).await.unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Two agents in one container, each on its own release link, service and port: a broken
/// revision on one is rolled back by its link alone, and the other keeps running untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_agent_of_a_container_rolls_back_by_its_link_and_the_other_is_untouched() {
    let ct = container("prov", 94).await;
    let session = connect(&ct.ip, ct.port, "root", &options(&ct.key, ct.host_keys.clone())).await.unwrap();
    provision::ensure_user(&session).await.unwrap();
    assert!(provision::install_release(&session, "good-1", &release(false).await, &meta("1.0.0")).await.unwrap());
    assert!(
        !provision::install_release(&session, "good-1", &release(false).await, &meta("1.0.0")).await.unwrap(),
        "installed once"
    );
    let ports = [free_port("0.0.0.0"), free_port("0.0.0.0")];
    let manager = ServiceManager::Runit;
    for (agent, port) in ["a1", "a2"].iter().zip(ports) {
        let env = [
            ("RIVETOS_AGENT_ID".to_string(), agent.to_string()),
            ("RIVETOS_HEALTH_PORT".to_string(), port.to_string()),
            ("RIVETOS_VERSION".to_string(), "1.0.0".to_string()),
            ("ANTHROPIC_API_KEY".to_string(), "sk-secret-'quoted'".to_string()),
        ];
        provision::write_env(&session, agent, &env).await.unwrap();
        assert_eq!(provision::switch(&session, agent, "good-1").await.unwrap(), None);
        provision::install_service(&session, manager, agent).await.unwrap();
        provision::control(&session, manager, agent, "start").await.unwrap();
    }
    for port in ports {
        until_health(&session, port, |live, status| live && status == Some("healthy")).await;
    }
    // The secret file is root's alone; the agents run as rivetos.
    let out = session
        .exec("stat -c '%a %U' /etc/rivetos/agents/a1/env; ps -o user,args | grep '[n]c -l' | head -1")
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("600 root\n") && text.lines().nth(1).unwrap_or_default().starts_with("rivetos"), "{text}");
    let a2_before = pid(&session, "a2").await;

    // a1 to a broken revision: its link and service only.
    provision::install_release(&session, "bad-2", &release(true).await, &meta("2.0.0")).await.unwrap();
    assert_eq!(provision::switch(&session, "a1", "bad-2").await.unwrap().as_deref(), Some("good-1"));
    provision::control(&session, manager, "a1", "restart").await.unwrap();
    until_health(&session, ports[0], |live, status| !live && status == Some("unhealthy")).await;
    assert_eq!(provision::current(&session, "a2").await.unwrap().as_deref(), Some("good-1"));

    // Rolled back by the link.
    assert_eq!(provision::switch(&session, "a1", "good-1").await.unwrap().as_deref(), Some("bad-2"));
    provision::control(&session, manager, "a1", "restart").await.unwrap();
    until_health(&session, ports[0], |live, status| live && status == Some("healthy")).await;
    assert_eq!(pid(&session, "a2").await, a2_before, "a2 was never restarted");
    until_health(&session, ports[1], |live, status| live && status == Some("healthy")).await;

    provision::control(&session, manager, "a1", "stop").await.unwrap();
    until_health(&session, ports[0], |live, _| !live).await;
    session.close().await.unwrap();
}

/// What a release records (the version its agents report, from its image).
fn meta(version: &str) -> provision::ReleaseMeta {
    provision::ReleaseMeta {
        reference: format!("rivetos-agent:{version}"),
        version: Some(version.to_string()),
        ..provision::ReleaseMeta::default()
    }
}

/// A state document too big for the description (a large fleet's rollout journal) is kept
/// as a file in the container, over SSH, named by its digest in the description; the
/// compare-and-swap stays the description's, and a file no document names is removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_state_document_is_a_file_in_the_container_named_in_the_description() {
    use orchestrator::port::{StateError, StateStore};
    use rivet_targets::proxmox::store::{BLOB_DIR, DESCRIPTION_MAX, ProxmoxStore};

    let ct = container("store", 96).await;
    containers::pin_host_keys(&ct.client, "pve1", 410, &ct.host_keys).await.unwrap();
    let client = Client::new(
        &ct.pve.url(),
        &Trust::Fingerprint(parse_fingerprint(&ct.pve.fingerprint()).unwrap()),
        Token::new(ct.pve.token_id(), ct.pve.token_secret()).unwrap(),
        Deadlines::default(),
    )
    .unwrap();
    let ssh = options(&ct.key, Vec::new());
    let store = ProxmoxStore::new(
        Arc::new(client),
        Some(("pve1".into(), 410, "home-agents-pve1".into())),
        Some((ssh, ct.port)),
    );
    let big: String = (0..400).map(|i| format!("{{\"instance\":{i},\"state\":\"pending\"}},")).collect();
    assert!(big.len() > DESCRIPTION_MAX, "{}", big.len());
    let first = store.store("journal", None, &big).await.unwrap();
    store.store("lock", None, "{\"holder\":\"ci\"}").await.unwrap();
    let loaded = store.load().await.unwrap();
    assert_eq!((loaded["journal"].generation, loaded["journal"].body.as_str()), (first, big.as_str()));
    assert_eq!(loaded["lock"].body, "{\"holder\":\"ci\"}", "small documents stay in the description");
    let description = ct.pve.container(410).unwrap().config["description"].clone();
    assert!(description.len() < 2048 && description.contains("rivetctl-state journal 1 @"), "{description}");

    // A stale generation is refused; a new body replaces the file, the old one goes.
    let stale = store.store("journal", None, &big).await.unwrap_err();
    assert!(matches!(stale, StateError::Conflict { .. }), "{stale:?}");
    let bigger = big.replace("pending", "done");
    store.store("journal", Some(first), &bigger).await.unwrap();
    assert_eq!(store.load().await.unwrap()["journal"].body, bigger);
    let session = connect(&ct.ip, ct.port, "root", &options(&ct.key, ct.host_keys.clone())).await.unwrap();
    let files = session.exec(&format!("ls {BLOB_DIR} | wc -l")).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&files.stdout).trim(), "1", "the old file was removed");

    // Changed by hand: the digest says so.
    session.exec(&format!("for f in {BLOB_DIR}/*; do echo x >> $f; done")).await.unwrap();
    let err = store.load().await.unwrap_err();
    assert!(err.to_string().contains("does not match its digest"), "{err}");
}
