//! SSH into a Proxmox VE container with the host keys its create task printed, read over the
//! pinned API (`containers::host_keys_in`, `SshOptions::pinned`): against the fake API with
//! its Docker stand-ins (a real sshd on the container's address, with the host keys the
//! fake generated at create). No known_hosts file is involved; a key that is not pinned is
//! refused.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rivet_targets::proxmox::client::{Client, Deadlines};
use rivet_targets::proxmox::containers::{self, Created};
use rivet_targets::proxmox::task::Token;
use rivet_targets::proxmox::tls::{Trust, parse_fingerprint};
use rivet_targets::ssh::{SshError, SshOptions, connect};
use testkit::proxmox::standin::DockerStandins;
use testkit::proxmox::{FakePve, Options, Runtime};

/// A free port on `ip` a moment ago.
fn free_port(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0)).unwrap().local_addr().unwrap().port()
}

/// An ed25519 key pair in `dir`: the private key's path and the public key.
fn keypair(dir: &Path) -> (PathBuf, String) {
    let key = dir.join("id_ed25519");
    let ok = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "ops@example.net", "-f"])
        .arg(&key)
        .status()
        .expect("ssh-keygen (openssh-client) must be installed");
    assert!(ok.success());
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap().trim().to_string();
    (key, public)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_is_reached_with_the_host_keys_its_create_task_printed() {
    // A loopback address of this test's own (127.0.0.0/8 is all local).
    let ip = format!("127.93.{}.10", std::process::id() % 250);
    let port = free_port(&ip);
    let standins = Arc::new(DockerStandins::new(&format!("ssh{}", std::process::id()), port).unwrap());
    let runtime: Arc<dyn Runtime> = standins.clone();
    let options_pve =
        Options { task_duration: Duration::from_millis(30), runtime: Some(runtime), ..Options::default() };
    let pve = FakePve::start(options_pve).await.unwrap();
    let pin = parse_fingerprint(&pve.fingerprint()).unwrap();
    let token = Token::new(pve.token_id(), pve.token_secret()).unwrap();
    let deadlines = Deadlines { pause: Duration::from_millis(20), ..Deadlines::default() };
    let client = Client::new(&pve.url(), &Trust::Fingerprint(pin), token, deadlines).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keypair(dir.path());
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
    assert_eq!(host_keys.len(), 2, "ed25519 and rsa: {host_keys:?}");
    containers::ensure_running(&client, "pve1", 410, "home-agents-pve1").await.unwrap();

    let session = connect(&ip, port, "root", &options(&key, host_keys.clone())).await.unwrap_or_else(|e| {
        panic!("{e}\nhint: {}", e.hint());
    });
    let out = session.exec("echo hello; id -u; hostname").await.unwrap();
    assert!(out.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n0\nhome-agents-pve1\n");
    session.close().await.unwrap();

    // Any other key is refused, naming what was seen and what was pinned.
    let elsewhere = vec!["SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".to_string()];
    let err = connect(&ip, port, "root", &options(&key, elsewhere)).await.unwrap_err();
    assert!(matches!(&err, SshError::NotPinned { fingerprint, .. } if host_keys.contains(fingerprint)), "{err}");
    assert!(err.hint().contains("create task"), "{}", err.hint());

    containers::destroy(&client, "pve1", 410, "home-agents-pve1", 10).await.unwrap();
}
