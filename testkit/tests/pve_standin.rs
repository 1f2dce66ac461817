//! The fake PVE's containers backed by Docker stand-ins: created and started through the API,
//! then reached with the real OpenSSH client on their own address, host key checked strictly,
//! runit driven over SSH, data kept across a shutdown and a start, and gone on destroy.
//! Needs the machine's Docker Engine, busybox, sshd, runit and `ssh`.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rivet_testkit::proxmox::raw::{Auth, send};
use rivet_testkit::proxmox::standin::DockerStandins;
use rivet_testkit::proxmox::{FakePve, Options, Runtime};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One request with the fake's token; status and JSON body.
async fn call(pve: &FakePve, method: &str, path: &str, params: &[(&str, &str)]) -> (u16, Value) {
    let answer =
        send(pve, method, path, params, Auth::Token).await.unwrap_or_else(|e| panic!("{method} {path}: {e:#}"));
    (answer.status, answer.body)
}

/// Starts a task and waits until it has stopped; its exit status and log.
async fn task(pve: &FakePve, method: &str, path: &str, params: &[(&str, &str)]) -> (String, Vec<String>) {
    let (status, body) = call(pve, method, path, params).await;
    assert_eq!(status, 200, "{method} {path}: {body}");
    let upid = body["data"].as_str().unwrap_or_else(|| panic!("no UPID: {body}")).to_string();
    let encoded: String = form_urlencoded::byte_serialize(upid.as_bytes()).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let (_, status) = call(pve, "GET", &format!("/nodes/pve1/tasks/{encoded}/status"), &[]).await;
        if status["data"]["status"] == "stopped" {
            let (_, log) = call(pve, "GET", &format!("/nodes/pve1/tasks/{encoded}/log"), &[("limit", "500")]).await;
            let lines = log["data"].as_array().unwrap().iter().map(|l| l["t"].as_str().unwrap().to_string());
            return (status["data"]["exitstatus"].as_str().unwrap_or("").to_string(), lines.collect());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("task {upid} did not stop in 60 s");
}

/// A loopback address no other test picks (127.0.0.0/8 is all local on Linux).
fn random_ip() -> String {
    let mut bytes = [0u8; 2];
    getrandom::fill(&mut bytes).unwrap();
    format!("127.{}.{}.10", 1 + bytes[0] % 254, bytes[1])
}

fn free_port(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0)).unwrap().local_addr().unwrap().port()
}

use rivet_testkit::proxmox::raw::keypair;

/// How the test reaches one container with the OpenSSH client.
struct Ssh {
    ip: String,
    port: u16,
    key: PathBuf,
    known_hosts: PathBuf,
}

impl Ssh {
    /// `ssh` with nothing from the machine's or user's config, and strict host key checking
    /// against `known_hosts` only.
    async fn run_with(&self, known_hosts: &Path, script: &str) -> Output {
        let known = format!("UserKnownHostsFile={}", known_hosts.display());
        let port = self.port.to_string();
        let target = format!("root@{}", self.ip);
        tokio::process::Command::new("ssh")
            .args(["-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", &known])
            .args(["-o", "GlobalKnownHostsFile=/dev/null", "-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=10"])
            .arg("-i")
            .arg(&self.key)
            .args(["-p", &port, &target, script])
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .expect("the OpenSSH client `ssh` must be installed")
    }

    /// Runs `script` as root; its stdout, the test failing unless it exits 0.
    async fn run(&self, script: &str) -> String {
        let out = self.run_with(&self.known_hosts, script).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "ssh {script:?}: {}: {stderr}", out.status);
        String::from_utf8(out.stdout).unwrap()
    }

    /// Polls `script` over SSH until its output satisfies `done`; that output.
    async fn until(&self, script: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = self.run(script).await;
            if done(&out) {
                return out;
            }
            assert!(Instant::now() < deadline, "{script:?} still says {out:?} after 30 s");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// `(pid 42)` of `sv status`' `run: /etc/service/demo: (pid 42) 3s`.
fn pid(status: &str) -> u32 {
    let rest = status.split("(pid ").nth(1).unwrap_or_else(|| panic!("no pid in {status:?}"));
    rest.split(')').next().unwrap().parse().unwrap()
}

/// `GET /` over plain TCP; the whole answer, or the error.
async fn http_get(address: &str) -> std::io::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n").await?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await?;
    Ok(answer)
}

fn docker_has(name: &str) -> bool {
    let out = std::process::Command::new("docker").args(["container", "inspect", name]).output().unwrap();
    out.status.success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_container_is_a_host_to_ssh_into_with_runit() {
    let ip = random_ip();
    let port = free_port(&ip);
    let standins = Arc::new(DockerStandins::new("standin-ssh", port).unwrap());
    assert!(standins.image().starts_with("rivet-testkit/pve-ct:"), "{}", standins.image());
    let options = Options {
        task_duration: Duration::from_millis(50),
        runtime: Some(standins.clone() as Arc<dyn Runtime>),
        ..Options::default()
    };
    let pve = FakePve::start(options).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keypair(dir.path(), "id_ed25519");
    let net0 = format!("name=eth0,bridge=vmbr0,ip={ip}/24,gw=127.0.0.1");
    let params = [
        ("vmid", "301"),
        ("ostemplate", "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"),
        ("hostname", "rivet-standin"),
        ("rootfs", "local-lvm:8"),
        ("net0", net0.as_str()),
        ("ssh-public-keys", public.as_str()),
        ("start", "1"),
    ];
    let (status, log) = task(&pve, "POST", "/nodes/pve1/lxc", &params).await;
    assert_eq!(status, "OK", "{log:#?}");
    let ct = pve.container(301).unwrap();
    assert!(ct.running);

    // 1. The real client, strict host key checking against the key the fake generated.
    let host_key = std::fs::read_to_string(ct.host_keys.join("ssh_host_ed25519_key.pub")).unwrap();
    let known_hosts = dir.path().join("known_hosts");
    std::fs::write(&known_hosts, format!("[{ip}]:{port} {}\n", host_key.trim())).unwrap();
    let ssh = Ssh { ip: ip.clone(), port, key, known_hosts };
    let out = ssh.run("echo hello; id -u; hostname; sv status sshd").await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..3], ["hello", "0", "rivet-standin"], "{out}");
    assert!(lines[3].starts_with("run: sshd: (pid "), "{out}");
    // runit is PID 1, as an init is in a container.
    assert_eq!(standins.exec(301, "cat /proc/1/comm").unwrap().trim(), "runsvdir");
    let modes = standins.exec(301, "stat -c '%a %u' /tmp /root/.ssh /root/.ssh/authorized_keys").unwrap();
    assert_eq!(modes.lines().collect::<Vec<_>>(), ["1777 0", "700 0", "600 0"]);

    // 2. Another key for the host in known_hosts: the client refuses to go on.
    let (_, stranger) = keypair(dir.path(), "stranger");
    let wrong = dir.path().join("known_hosts.wrong");
    std::fs::write(&wrong, format!("[{ip}]:{port} {stranger}\n")).unwrap();
    let refused = ssh.run_with(&wrong, "echo should-not-run").await;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(stderr.contains("Host key verification failed"), "{stderr}");
    assert!(refused.stdout.is_empty());

    // 3. runit supervises a service written over SSH: busybox httpd on the container's address.
    let web = free_port(&ip);
    let setup = format!(
        "mkdir -p /opt/www /etc/service/demo && echo hi-from-demo > /opt/www/index.html && \
         printf '#!/bin/sh\\nexec httpd -f -p {ip}:{web} -h /opt/www\\n' > /etc/service/demo/run && \
         chmod 755 /etc/service/demo/run"
    );
    ssh.run(&setup).await;
    let first = ssh.until("sv status /etc/service/demo || true", |s| s.starts_with("run:")).await;
    let answer = http_get(&format!("{ip}:{web}")).await.unwrap();
    assert!(answer.starts_with("HTTP/1.") && answer.ends_with("hi-from-demo\n"), "{answer}");
    ssh.run("sv restart /etc/service/demo").await;
    let second = ssh.until("sv status /etc/service/demo", |s| s.starts_with("run:")).await;
    assert_ne!(pid(&first), pid(&second), "{first} then {second}");
    ssh.run("sv stop /etc/service/demo").await;
    let down = ssh.run("sv status /etc/service/demo").await;
    assert!(down.starts_with("down: /etc/service/demo: "), "{down}");
    assert!(http_get(&format!("{ip}:{web}")).await.is_err(), "httpd still answers");

    // 4. A shutdown and a start through the API keep the rootfs, and sshd comes back.
    ssh.run("echo kept-across-restart > /var/lib/marker").await;
    let (status, log) =
        task(&pve, "POST", "/nodes/pve1/lxc/301/status/shutdown", &[("timeout", "30"), ("forceStop", "1")]).await;
    assert_eq!(status, "OK", "{log:#?}");
    assert!(!pve.container(301).unwrap().running);
    let stopped = standins.exec(301, "true").unwrap_err();
    assert!(format!("{stopped:#}").contains("is not running"), "{stopped:#}");
    let offline = ssh.run_with(&ssh.known_hosts, "true").await;
    assert!(!offline.status.success(), "sshd answers while the container is stopped");
    let (status, log) = task(&pve, "POST", "/nodes/pve1/lxc/301/status/start", &[]).await;
    assert_eq!(status, "OK", "{log:#?}");
    let out = ssh.run("cat /var/lib/marker; sv status sshd").await;
    assert!(out.starts_with("kept-across-restart\nrun: sshd: (pid "), "{out}");

    // 5. Destroy (forced, so stop first) removes the stand-in.
    let name = standins.container_name(301);
    assert_eq!(name, "rivet-pve-ct-standin-ssh-301");
    assert!(docker_has(&name));
    let (status, log) = task(&pve, "DELETE", "/nodes/pve1/lxc/301", &[("force", "1"), ("purge", "1")]).await;
    assert_eq!(status, "OK", "{log:#?}");
    assert!(!docker_has(&name), "{name} is still there");
    assert!(pve.container(301).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_without_a_static_address_fails_to_start_clearly() {
    let standins = Arc::new(DockerStandins::new("standin-dhcp", 2222).unwrap());
    let options = Options {
        task_duration: Duration::from_millis(50),
        runtime: Some(standins.clone() as Arc<dyn Runtime>),
        ..Options::default()
    };
    let pve = FakePve::start(options).await.unwrap();
    let base = [
        ("ostemplate", "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"),
        ("rootfs", "local-lvm:8"),
        ("start", "1"),
    ];
    let mut dhcp = base.to_vec();
    dhcp.extend([("vmid", "302"), ("net0", "name=eth0,bridge=vmbr0,ip=dhcp")]);
    let (status, _) = task(&pve, "POST", "/nodes/pve1/lxc", &dhcp).await;
    assert_eq!(status, "CT 302: net0 has ip=dhcp; a stand-in needs a static address (ip=127.x.y.z/nn) to bind sshd to");
    let mut none = base.to_vec();
    none.push(("vmid", "303"));
    let (status, _) = task(&pve, "POST", "/nodes/pve1/lxc", &none).await;
    assert_eq!(status, "CT 303 has no net0: a stand-in needs its address");
    assert!(!docker_has(&standins.container_name(302)) && !docker_has(&standins.container_name(303)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sshd_that_cannot_listen_fails_the_start_with_its_log() {
    let ip = random_ip();
    // Something else holds the port: it accepts, but never greets.
    let squatter = std::net::TcpListener::bind((ip.as_str(), 0)).unwrap();
    let port = squatter.local_addr().unwrap().port();
    let standins = Arc::new(DockerStandins::new("standin-busy", port).unwrap());
    let options = Options {
        task_duration: Duration::from_millis(50),
        runtime: Some(standins.clone() as Arc<dyn Runtime>),
        ..Options::default()
    };
    let pve = FakePve::start(options).await.unwrap();
    let net0 = format!("name=eth0,bridge=vmbr0,ip={ip}/24");
    let params = [
        ("vmid", "304"),
        ("ostemplate", "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"),
        ("rootfs", "local-lvm:8"),
        ("net0", net0.as_str()),
        ("start", "1"),
    ];
    let (status, _) = task(&pve, "POST", "/nodes/pve1/lxc", &params).await;
    let name = standins.container_name(304);
    let expected = format!("sshd of {name} did not come up on {ip}:{port} in 20s: no banner in 2s; docker logs:\n");
    assert!(status.starts_with(&expected), "{status}");
    assert!(status.contains(&format!("Bind to port {port} on {ip} failed: Address already in use.")), "{status}");
    assert!(!pve.container(304).unwrap().running);
    let state = std::process::Command::new("docker")
        .args(["container", "inspect", "--format", "{{.State.Running}}", &name])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&state.stdout).trim(), "false", "the failed stand-in is left running");
    drop(squatter);
}
