//! The pod sandbox: one tiny "pause" container per pod that owns the pod's network namespace,
//! as the real kubelet's sandbox does. Every container of the pod joins it
//! (`NetworkMode: container:<sandbox>`), so the pod IP stays the same across container restarts
//! and containers of one pod reach each other on localhost.
//!
//! The engine here has no registry access, so the pause image is made on the spot: a 129-byte
//! static x86-64 ELF that loops on `pause(2)`, imported from a one-file tar as
//! `rivet-testkubelet-pause:1`. It holds no state and ignores SIGTERM (it is PID 1 with no
//! handler); the kubelet removes it with `docker rm -f`.

use anyhow::{Context as _, bail};
use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{CreateContainerOptionsBuilder, CreateImageOptionsBuilder};
use futures_util::TryStreamExt;
use std::collections::HashMap;

/// The tag the pause image is imported under (kept across runs; it is 129 bytes).
pub(crate) const PAUSE_IMAGE: &str = "rivet-testkubelet-pause:1";

/// A running sandbox container and the pod IP it got on the Docker network.
#[derive(Debug, Clone)]
pub(crate) struct Sandbox {
    pub id: String,
    pub ip: String,
}

/// A static x86-64 Linux executable: `loop { pause() }`.
fn pause_elf() -> Vec<u8> {
    const BASE: u64 = 0x40_0000;
    // mov eax, 34 (pause); syscall; jmp back to the mov.
    const CODE: [u8; 9] = [0xb8, 0x22, 0x00, 0x00, 0x00, 0x0f, 0x05, 0xeb, 0xf7];
    let header_len = 64 + 56;
    let total = (header_len + CODE.len()) as u64;
    let mut elf = Vec::with_capacity(total as usize);
    elf.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    elf.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    elf.extend_from_slice(&0x3eu16.to_le_bytes()); // EM_X86_64
    elf.extend_from_slice(&1u32.to_le_bytes()); // EV_CURRENT
    elf.extend_from_slice(&(BASE + header_len as u64).to_le_bytes()); // entry
    elf.extend_from_slice(&64u64.to_le_bytes()); // program headers offset
    elf.extend_from_slice(&0u64.to_le_bytes()); // no section headers
    elf.extend_from_slice(&0u32.to_le_bytes()); // flags
    elf.extend_from_slice(&64u16.to_le_bytes()); // ELF header size
    elf.extend_from_slice(&56u16.to_le_bytes()); // program header size
    elf.extend_from_slice(&1u16.to_le_bytes()); // one program header
    elf.extend_from_slice(&[0; 6]); // section header size, count, string index
    elf.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    elf.extend_from_slice(&5u32.to_le_bytes()); // R + X
    elf.extend_from_slice(&0u64.to_le_bytes()); // file offset
    elf.extend_from_slice(&BASE.to_le_bytes()); // virtual address
    elf.extend_from_slice(&BASE.to_le_bytes()); // physical address
    elf.extend_from_slice(&total.to_le_bytes()); // size in the file
    elf.extend_from_slice(&total.to_le_bytes()); // size in memory
    elf.extend_from_slice(&0x1000u64.to_le_bytes()); // alignment
    elf.extend_from_slice(&CODE);
    elf
}

/// A ustar archive holding one executable file `name` (mode 0755, owned by root).
fn one_file_tar(name: &str, content: &[u8]) -> Vec<u8> {
    let mut header = [0u8; 512];
    header[..name.len()].copy_from_slice(name.as_bytes());
    let mut field = |offset: usize, width: usize, value: u64| {
        let text = format!("{value:0w$o}\0", w = width - 1);
        header[offset..offset + width].copy_from_slice(text.as_bytes());
    };
    field(100, 8, 0o755); // mode
    field(108, 8, 0); // uid
    field(116, 8, 0); // gid
    field(124, 12, content.len() as u64); // size
    field(136, 12, 0); // mtime
    header[156] = b'0'; // regular file
    header[257..263].copy_from_slice(b"ustar\0");
    header[263..265].copy_from_slice(b"00");
    header[148..156].copy_from_slice(b"        "); // checksum counted as spaces
    let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
    header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut tar = header.to_vec();
    tar.extend_from_slice(content);
    tar.resize(tar.len().div_ceil(512) * 512, 0);
    tar.resize(tar.len() + 1024, 0); // end of archive
    tar
}

/// Imports the pause image unless the engine already has it.
pub(crate) async fn ensure_pause_image(docker: &Docker) -> anyhow::Result<()> {
    if docker.inspect_image(PAUSE_IMAGE).await.is_ok() {
        return Ok(());
    }
    if std::env::consts::ARCH != "x86_64" {
        bail!("the test kubelet's pause sandbox is an x86-64 executable; this host is {}", std::env::consts::ARCH);
    }
    let (repo, tag) = PAUSE_IMAGE.split_once(':').unwrap_or((PAUSE_IMAGE, "latest"));
    let options = CreateImageOptionsBuilder::default()
        .from_src("-")
        .repo(repo)
        .tag(tag)
        .changes(vec!["CMD [\"/pause\"]".to_string()])
        .build();
    let tar = one_file_tar("pause", &pause_elf());
    docker
        .create_image(Some(options), Some(bollard::body_full(tar.into())), None)
        .try_collect::<Vec<_>>()
        .await
        .with_context(|| format!("importing the sandbox image {PAUSE_IMAGE} into the Docker Engine"))?;
    Ok(())
}

/// Creates and starts the sandbox of a pod on `network` and returns its IP there.
pub(crate) async fn start(
    docker: &Docker,
    name: &str,
    hostname: &str,
    network: &str,
    labels: HashMap<String, String>,
    extra_hosts: Vec<String>,
) -> anyhow::Result<Sandbox> {
    let body = ContainerCreateBody {
        image: Some(PAUSE_IMAGE.to_string()),
        hostname: Some(hostname.to_string()),
        labels: Some(labels),
        host_config: Some(HostConfig {
            network_mode: Some(network.to_string()),
            extra_hosts: Some(extra_hosts),
            ..Default::default()
        }),
        ..Default::default()
    };
    let options = CreateContainerOptionsBuilder::default().name(name).build();
    let created = docker
        .create_container(Some(options), body)
        .await
        .with_context(|| format!("creating the pod sandbox container {name} on Docker network {network:?}"))?;
    docker.start_container(&created.id, None).await.with_context(|| format!("starting the pod sandbox {name}"))?;
    let inspect = docker
        .inspect_container(&created.id, None)
        .await
        .with_context(|| format!("inspecting the pod sandbox {name}"))?;
    let ip = inspect
        .network_settings
        .and_then(|settings| settings.networks)
        .and_then(|networks| networks.get(network).and_then(|endpoint| endpoint.ip_address.clone()))
        .filter(|ip| !ip.is_empty());
    match ip {
        Some(ip) => Ok(Sandbox { id: created.id, ip }),
        None => bail!("the pod sandbox {name} got no IP address on Docker network {network:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pause_executable_runs_until_killed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("pause");
        std::fs::write(&path, pause_elf()).expect("write pause");
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
        let mut child = std::process::Command::new(&path).spawn().expect("the pause ELF must be executable");
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(child.try_wait().expect("wait").is_none(), "pause exited on its own");
        child.kill().expect("kill");
        let status = child.wait().expect("wait");
        assert!(!status.success());
    }

    #[test]
    fn tar_header_checksum_is_valid() {
        let tar = one_file_tar("pause", b"abc");
        assert_eq!(tar.len(), 512 + 512 + 1024);
        let mut header = tar[..512].to_vec();
        let stored = u32::from_str_radix(std::str::from_utf8(&header[148..154]).expect("octal"), 8).expect("octal");
        header[148..156].copy_from_slice(b"        ");
        assert_eq!(stored, header.iter().map(|&b| u32::from(b)).sum::<u32>());
        assert_eq!(&tar[512..515], b"abc");
    }
}
