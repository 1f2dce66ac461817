//! A [`Runtime`] that makes the fake's LXC containers real enough to SSH into: each one gets a
//! Docker container standing in for it, with runit's `runsvdir` as PID 1 (the service manager
//! a deployment talks to, as it would to a container's init) and a real OpenSSH `sshd` as a
//! runit service, listening on the container's own address from `net0`.
//!
//! The stand-ins use the machine's network (`--network host`): the addresses a test gives its
//! containers are loopback ones (`127.x.y.z`, all of 127.0.0.0/8 is local on Linux, so any of
//! them can be bound without setup), each sshd binds only its own, and a test reaches them as
//! rivetctl would reach a container on a bridge, without port mappings to translate.
//!
//! A stopped stand-in is kept, as PVE keeps a stopped container's rootfs: what a deployment
//! wrote survives a stop and a start. Destroying the container removes it, and dropping the
//! [`DockerStandins`] removes every stand-in it made. The image is built from the machine's
//! own files (see `standin/image.rs`): there is no registry to pull from.

mod image;

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use tokio::io::AsyncReadExt;

use super::{Container, Runtime};

/// The label on every stand-in; its value is the label given to [`DockerStandins::new`].
const LABEL: &str = "io.rivet.testkit.pve";
/// How long sshd may take to greet after `docker start`.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// The files of `Container::host_keys` that become sshd's host keys.
const HOST_KEYS: [&str; 4] =
    ["ssh_host_ed25519_key", "ssh_host_ed25519_key.pub", "ssh_host_rsa_key", "ssh_host_rsa_key.pub"];

/// The stand-ins of one test. Use it as `Arc<DockerStandins>` for the test and (coerced)
/// as the fake's `Arc<dyn Runtime>`.
pub struct DockerStandins {
    label: String,
    ssh_port: u16,
    image: String,
}

type Call<'a> = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send + 'a>>;

impl DockerStandins {
    /// `label`: unique per test; it names (`rivet-pve-ct-<label>-<vmid>`) and labels the
    /// stand-ins, and those left by an earlier run of the same test (killed before its
    /// `Drop`) are removed here. `ssh_port`: where sshd listens at each container's address
    /// (PVE's containers use 22; a test picks a free port). Builds the image if the engine
    /// lacks it, so this blocks for a second or two the first time.
    pub fn new(label: &str, ssh_port: u16) -> anyhow::Result<DockerStandins> {
        let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
        if label.is_empty() || !label.chars().all(valid) {
            bail!("the label {label:?} must be letters, digits, '-', '_' and '.', as it names Docker containers");
        }
        let image = image::ensure()?;
        let standins = DockerStandins { label: label.to_string(), ssh_port, image };
        standins.cleanup();
        Ok(standins)
    }

    /// The Docker container standing in for CT `vmid`.
    pub fn container_name(&self, vmid: u32) -> String {
        format!("rivet-pve-ct-{}-{vmid}", self.label)
    }

    /// The image the stand-ins run, `rivet-testkit/pve-ct:<hash of its content>`.
    pub fn image(&self) -> &str {
        &self.image
    }

    /// Runs `sh -c script` in the stand-in of `vmid` as root (`docker exec`), for a test's
    /// assertions behind the back of SSH; its stdout. Fails, with stderr, unless it exits 0.
    pub fn exec(&self, vmid: u32, script: &str) -> anyhow::Result<String> {
        docker_sync(&["exec", &self.container_name(vmid), "/bin/sh", "-c", script])
    }

    /// Removes every stand-in of this label, running or not (also done on drop).
    pub fn cleanup(&self) {
        let filter = format!("label={LABEL}={}", self.label);
        match docker_sync(&["ps", "-aq", "--filter", &filter]) {
            Ok(ids) => {
                let ids: Vec<&str> = ids.split_whitespace().collect();
                if !ids.is_empty() {
                    let mut args = vec!["rm", "-f", "-v"];
                    args.extend(ids);
                    if let Err(err) = docker_sync(&args) {
                        eprintln!("pve stand-ins: {err:#}");
                    }
                }
            }
            Err(err) => eprintln!("pve stand-ins: {err:#}"),
        }
    }

    async fn start_ct(&self, ct: Container) -> anyhow::Result<()> {
        let ip = address(&ct)?;
        let name = self.container_name(ct.vmid);
        let listen = format!("{ip}:{}", self.ssh_port);
        let stage = tempfile::Builder::new().prefix("rivet-pve-ct-stage-").tempdir()?;
        let config = stage.path().join("sshd_config");
        std::fs::write(&config, image::sshd_config(&listen))?;
        let state = running(&name).await?;
        if state != Some(true) {
            if state.is_none()
                && let Err(err) = self.create(&ct, &name, stage.path()).await
            {
                // Half made, it would start later without its keys.
                let _ = docker(&["rm", "-f", "-v", &name]).await;
                return Err(err);
            }
            // Also when it was stopped: PVE rewrites a container's network config at each
            // start, so the listener follows an address changed meanwhile.
            docker(&["cp", path(&config)?, &format!("{name}:/etc/ssh/sshd_config")]).await?;
            docker(&["start", &name]).await?;
        }
        let ready = wait_ready(&name, &listen).await;
        if ready.is_err() {
            // A start that fails leaves the container stopped, in PVE and so here: the fake
            // holds it stopped and will never stop it.
            let _ = docker(&["stop", "-t", "1", &name]).await;
        }
        ready
    }

    /// `docker create`, and the files PVE writes into a new container's rootfs: its host keys
    /// and root's authorized keys. Copied in while it is not running yet, with the modes sshd
    /// demands (private keys and authorized_keys 0600, root's): the fake's own files are
    /// readable by whoever runs the test, which sshd refuses.
    async fn create(&self, ct: &Container, name: &str, stage: &Path) -> anyhow::Result<()> {
        let hostname = ct.config.get("hostname").cloned().unwrap_or_else(|| format!("CT{}", ct.vmid));
        let keys = stage.join("keys");
        std::fs::create_dir(&keys)?;
        set_mode(&keys, 0o700)?;
        for file in HOST_KEYS {
            let from = ct.host_keys.join(file);
            std::fs::copy(&from, keys.join(file))
                .with_context(|| format!("CT {}: copying {}", ct.vmid, from.display()))?;
            set_mode(&keys.join(file), if file.ends_with(".pub") { 0o644 } else { 0o600 })?;
        }
        let authorized = ct.host_keys.join("authorized_keys");
        let label = format!("{LABEL}={}", self.label);
        let args = ["create", "--name", name, "--label", &label, "--network", "host", "--hostname", &hostname];
        docker(&[&args[..], &[self.image.as_str()]].concat()).await?;
        docker(&["cp", path(&keys)?, &format!("{name}:/etc/ssh/keys")]).await?;
        // Without `ssh-public-keys` PVE writes none, and so no key logs in.
        if authorized.exists() {
            let staged = stage.join("authorized_keys");
            std::fs::copy(&authorized, &staged)?;
            set_mode(&staged, 0o600)?;
            docker(&["cp", path(&staged)?, &format!("{name}:/root/.ssh/authorized_keys")]).await?;
        }
        Ok(())
    }

    async fn stop_ct(&self, vmid: u32) -> anyhow::Result<()> {
        // runsvdir exits on SIGTERM, and the kernel ends the rest of the container with it.
        docker(&["stop", "-t", "5", &self.container_name(vmid)]).await.map(drop)
    }

    async fn destroy_ct(&self, vmid: u32) -> anyhow::Result<()> {
        match docker(&["rm", "-f", "-v", &self.container_name(vmid)]).await {
            // Never started, so never stood in for.
            Err(err) if format!("{err:#}").contains("No such container") => Ok(()),
            other => other.map(drop),
        }
    }
}

impl Runtime for DockerStandins {
    fn start(&self, ct: &Container) -> Call<'_> {
        let ct = ct.clone();
        Box::pin(async move { self.start_ct(ct).await })
    }

    fn stop(&self, vmid: u32) -> Call<'_> {
        Box::pin(self.stop_ct(vmid))
    }

    fn destroy(&self, vmid: u32) -> Call<'_> {
        Box::pin(self.destroy_ct(vmid))
    }
}

impl Drop for DockerStandins {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// The address of `ip=` in `net0` (`name=eth0,bridge=vmbr0,ip=127.0.5.10/24,gw=…`).
fn address(ct: &Container) -> anyhow::Result<String> {
    let vmid = ct.vmid;
    let net0 = ct.config.get("net0").with_context(|| format!("CT {vmid} has no net0: a stand-in needs its address"))?;
    let ip = net0
        .split(',')
        .find_map(|field| field.strip_prefix("ip="))
        .with_context(|| format!("CT {vmid}: net0 {net0:?} has no ip="))?;
    if ip == "dhcp" || ip == "manual" {
        bail!("CT {vmid}: net0 has ip={ip}; a stand-in needs a static address (ip=127.x.y.z/nn) to bind sshd to");
    }
    let ip = ip.split('/').next().unwrap_or(ip);
    ip.parse::<std::net::Ipv4Addr>().with_context(|| format!("CT {vmid}: net0 ip={ip} is not an IPv4 address"))?;
    Ok(ip.to_string())
}

/// Whether the container exists (`None` if not) and runs.
async fn running(name: &str) -> anyhow::Result<Option<bool>> {
    match docker(&["container", "inspect", "--format", "{{.State.Running}}", name]).await {
        Ok(out) => Ok(Some(out.trim() == "true")),
        Err(err) if format!("{err:#}").contains("No such") => Ok(None),
        Err(err) => Err(err),
    }
}

/// Until sshd greets with its `SSH-2.0-` banner; a port that merely accepts could be anything.
/// Fails with the container's log, early if the container has exited.
async fn wait_ready(name: &str, listen: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut attempt = 0u32;
    let last = loop {
        let error = match banner(listen).await {
            Ok(line) if line.starts_with("SSH-2.0-") => return Ok(()),
            Ok(line) => format!("answered {line:?}, not an SSH banner"),
            Err(err) => format!("{err:#}"),
        };
        attempt += 1;
        let exited = attempt.is_multiple_of(10) && running(name).await? != Some(true);
        if exited || started.elapsed() > READY_TIMEOUT {
            break format!("{error}{}", if exited { " (the container has exited)" } else { "" });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let logs = match docker(&["logs", "--tail", "60", name]).await {
        Ok(logs) => logs,
        Err(err) => format!("(no logs: {err:#})"),
    };
    bail!("sshd of {name} did not come up on {listen} in {READY_TIMEOUT:?}: {last}; docker logs:\n{logs}")
}

async fn banner(listen: &str) -> anyhow::Result<String> {
    let mut stream = tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(listen))
        .await
        .map_err(|_| anyhow!("connect timed out"))??;
    let mut line = Vec::new();
    let mut buf = [0u8; 256];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while !line.contains(&b'\n') {
        let n = tokio::time::timeout_at(deadline, stream.read(&mut buf))
            .await
            .map_err(|_| anyhow!("no banner in 2s"))??;
        if n == 0 {
            break;
        }
        line.extend_from_slice(&buf[..n]);
    }
    Ok(String::from_utf8_lossy(&line).trim_end().to_string())
}

/// `docker <args>`; its stdout, or an error with its stderr.
async fn docker(args: &[&str]) -> anyhow::Result<String> {
    let out = tokio::process::Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        // A fake server dropped mid-task aborts the task; the CLI must not outlive it.
        .kill_on_drop(true)
        .output()
        .await
        .with_context(|| format!("running docker {}", args.join(" ")))?;
    checked(args, out)
}

fn docker_sync(args: &[&str]) -> anyhow::Result<String> {
    let out = std::process::Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running docker {}", args.join(" ")))?;
    checked(args, out)
}

fn checked(args: &[&str], out: std::process::Output) -> anyhow::Result<String> {
    if !out.status.success() {
        bail!("docker {} failed ({}): {}", args.join(" "), out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn path(path: &Path) -> anyhow::Result<&str> {
    path.to_str().with_context(|| format!("{} is not UTF-8", path.display()))
}

fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ct(net0: Option<&str>) -> Container {
        let config = net0.map(|n| ("net0".to_string(), n.to_string())).into_iter().collect();
        Container { vmid: 101, node: "pve1".into(), config, running: false, host_keys: "/nonexistent".into() }
    }

    #[test]
    fn the_address_is_the_static_ip_of_net0() {
        let ok = address(&ct(Some("name=eth0,bridge=vmbr0,ip=127.0.5.10/24,gw=127.0.5.1"))).unwrap();
        assert_eq!(ok, "127.0.5.10");
        let message = |net0| format!("{:#}", address(&ct(net0)).unwrap_err());
        assert_eq!(
            message(Some("name=eth0,bridge=vmbr0,ip=dhcp")),
            "CT 101: net0 has ip=dhcp; a stand-in needs a static address (ip=127.x.y.z/nn) to bind sshd to"
        );
        assert_eq!(
            message(Some("name=eth0,bridge=vmbr0,ip6=auto")),
            "CT 101: net0 \"name=eth0,bridge=vmbr0,ip6=auto\" has no ip="
        );
        assert!(message(Some("name=eth0,ip=fe80::1/64")).starts_with("CT 101: net0 ip=fe80::1 is not an IPv4 address"));
        assert_eq!(message(None), "CT 101 has no net0: a stand-in needs its address");
    }

    #[test]
    fn labels_must_name_containers() {
        let err = DockerStandins::new("a b", 22).err().expect("refused");
        assert!(format!("{err:#}").starts_with("the label \"a b\" must be letters"), "{err:#}");
    }
}
