//! The image of the stand-ins, assembled from the machine's own files because nothing can be
//! pulled: busybox (static) for a shell and the usual tools, OpenSSH's `sshd` and runit with
//! every shared library `ldd` names for them, the accounts and directories sshd insists on.
//! It is tagged with a hash of its content, so a changed host file (a library upgrade) makes
//! a new image instead of reusing a stale one, and an unchanged machine builds it once.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Component, Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};

/// Where the image's binaries come from on the machine, and where they go in the image.
const BUSYBOX: &str = "/bin/busybox";
const SSHD: &str = "/usr/sbin/sshd";
const RUNIT: [&str; 4] = ["/usr/bin/runsvdir", "/usr/bin/runsv", "/usr/bin/sv", "/usr/bin/chpst"];
/// OpenSSH ≥ 9.8 splits the server into these helpers, which `sshd` execs by path; 9.2
/// (Debian 12) has neither. Taken when present.
const SSHD_HELPERS: [&str; 2] = ["/usr/lib/openssh/sshd-session", "/usr/lib/openssh/sshd-auth"];
/// Read when present: without it sshd logs an error and offers no DH group exchange.
const MODULI: &str = "/etc/ssh/moduli";

/// Busybox applets left out: a `/bin/sv` would shadow runit's `/usr/bin/sv` for a `PATH`
/// with `/bin` first, and busybox's runit clones differ from runit in their output.
const NOT_APPLETS: [&str; 7] = ["sshd", "runsvdir", "runsv", "sv", "chpst", "svlogd", "busybox"];

/// `root` may log in with a key only: `*` locks the password, not the account (`UsePAM no`
/// makes sshd read the shadow field itself and refuse accounts starting with `!`).
const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
    sshd:x:100:65534:sshd privilege separation:/run/sshd:/bin/false\n\
    nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
const GROUP: &str = "root:x:0:\nnogroup:x:65534:\n";
const SHADOW: &str = "root:*:19000:0:99999:7:::\nsshd:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n";
/// glibc ≥ 2.34 has the `files` service built in; the file only says so explicitly.
const NSSWITCH: &str = "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n";
/// runit starts sshd in the foreground, its log on stdout (so in `docker logs`).
const SSHD_RUN: &str = "#!/bin/sh\nexec /usr/sbin/sshd -D -e -f /etc/ssh/sshd_config 2>&1\n";

const DOCKERFILE: &str = "FROM scratch\n\
    COPY rootfs/ /\n\
    ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n\
    ENV SVDIR=/etc/service\n\
    LABEL io.rivet.testkit.pve-image=1\n\
    CMD [\"/usr/bin/runsvdir\", \"-P\", \"/etc/service\"]\n";

/// The config sshd runs with; `listen` is `ip:port`, written at every start (as PVE writes a
/// container's network config at every start). The image itself carries one listening on
/// nothing routable, never the machine's port 22 (the stand-ins share its network).
pub(super) fn sshd_config(listen: &str) -> String {
    format!(
        "# Written by rivet-testkit's PVE stand-in at each start.\n\
         ListenAddress {listen}\n\
         HostKey /etc/ssh/keys/ssh_host_ed25519_key\n\
         HostKey /etc/ssh/keys/ssh_host_rsa_key\n\
         PermitRootLogin prohibit-password\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         UsePAM no\n\
         AuthorizedKeysFile /root/.ssh/authorized_keys\n\
         Subsystem sftp internal-sftp\n\
         PidFile /run/sshd.pid\n\
         PrintMotd no\n\
         PrintLastLog no\n\
         LogLevel VERBOSE\n"
    )
}

/// Built in this process already (tests of one binary share it).
static BUILT: Mutex<Option<String>> = Mutex::new(None);

/// The tag of the image, built first if the engine lacks it.
pub(super) fn ensure() -> anyhow::Result<String> {
    let mut built = crate::proxmox::lock(&BUILT);
    if let Some(tag) = built.as_ref() {
        return Ok(tag.clone());
    }
    let context = tempfile::Builder::new().prefix("rivet-pve-ct-image-").tempdir().context("creating its context")?;
    let rootfs = context.path().join("rootfs");
    assemble(&rootfs).context("assembling the stand-in image from the machine's files")?;
    fs::write(context.path().join("Dockerfile"), DOCKERFILE)?;
    let mut hash = Sha256::new();
    hash.update(DOCKERFILE);
    hash_tree(&rootfs, &rootfs, &mut hash)?;
    let tag = format!("rivet-testkit/pve-ct:{}", &hex::encode(hash.finalize())[..12]);
    if !present(&tag)? {
        let out = Command::new("docker").args(["build", "-q", "-t", &tag]).arg(context.path()).output()?;
        // Another test process may have built the same content meanwhile: its tag is as good.
        if !out.status.success() && !present(&tag)? {
            bail!("docker build of {tag} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
    }
    *built = Some(tag.clone());
    Ok(tag)
}

fn present(tag: &str) -> anyhow::Result<bool> {
    let out = Command::new("docker").args(["image", "inspect", "--format", "{{.Id}}", tag]).output();
    Ok(out.context("running docker image inspect")?.status.success())
}

fn assemble(root: &Path) -> anyhow::Result<()> {
    for dir in ["bin", "usr/sbin", "usr/bin", "etc/ssh", "etc/service/sshd", "opt", "var/lib", "var/log", "run"] {
        fs::create_dir_all(root.join(dir))?;
    }
    // Privilege separation: sshd chroots into /run/sshd (Debian's build) and wants it root's
    // and not writable by others; /var/empty is the upstream default.
    for (dir, mode) in [("run/sshd", 0o755), ("var/empty", 0o755), ("root", 0o700), ("root/.ssh", 0o700)] {
        fs::create_dir_all(root.join(dir))?;
        chmod(&root.join(dir), mode)?;
    }
    fs::create_dir_all(root.join("tmp"))?;
    chmod(&root.join("tmp"), 0o1777)?;
    // `sv` without SVDIR (an ssh session's environment) looks in /service.
    symlink("etc/service", root.join("service"))?;

    copy_file(Path::new(BUSYBOX), &root.join("bin/busybox"))?;
    for applet in applets()? {
        if !NOT_APPLETS.contains(&applet.as_str()) {
            symlink("busybox", root.join("bin").join(&applet))?;
        }
    }
    let mut dynamic: Vec<&str> = vec![SSHD];
    dynamic.extend(RUNIT);
    dynamic.extend(SSHD_HELPERS.iter().filter(|p| Path::new(p).exists()));
    let mut libraries = BTreeSet::new();
    for binary in &dynamic {
        copy_file(Path::new(binary), &root.join(&binary[1..]))?;
        libraries.extend(ldd(binary)?);
    }
    for library in &libraries {
        add_host_path(root, library, 0).with_context(|| format!("copying {}", library.display()))?;
    }
    if Path::new(MODULI).exists() {
        copy_file(Path::new(MODULI), &root.join("etc/ssh/moduli"))?;
    }

    let config = sshd_config("127.0.0.1:1");
    let files: [(&str, &str, u32); 7] = [
        ("etc/passwd", PASSWD, 0o644),
        ("etc/group", GROUP, 0o644),
        ("etc/shadow", SHADOW, 0o600),
        ("etc/nsswitch.conf", NSSWITCH, 0o644),
        ("etc/service/sshd/run", SSHD_RUN, 0o755),
        ("etc/ssh/sshd_config", &config, 0o644),
        ("var/log/wtmp", "", 0o664),
    ];
    for (path, text, mode) in files {
        fs::write(root.join(path), text)?;
        chmod(&root.join(path), mode)?;
    }
    Ok(())
}

fn applets() -> anyhow::Result<Vec<String>> {
    let out = Command::new(BUSYBOX).arg("--list").output().with_context(|| format!("running {BUSYBOX} --list"))?;
    if !out.status.success() {
        bail!("{BUSYBOX} --list failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let list = String::from_utf8(out.stdout)?;
    Ok(list.lines().map(str::trim).filter(|a| !a.is_empty() && !a.contains('/')).map(str::to_string).collect())
}

/// The libraries (and the loader) `ldd` names, at the paths it names them.
fn ldd(binary: &str) -> anyhow::Result<Vec<PathBuf>> {
    let out = Command::new("ldd").arg(binary).output().context("running ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("ldd {binary} failed: {}{}", text.trim(), String::from_utf8_lossy(&out.stderr).trim());
    }
    let mut paths = Vec::new();
    for line in text.lines() {
        if line.contains("not found") {
            bail!("ldd {binary}: {}", line.trim());
        }
        // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)` or `/lib64/ld-linux-x86-64.so.2 (0x…)`;
        // the vDSO has no file.
        let path = line.split("=>").last().unwrap_or("").split_whitespace().next().unwrap_or("");
        if path.starts_with('/') {
            paths.push(PathBuf::from(path));
        }
    }
    Ok(paths)
}

/// Copies a host file to the same path in the image, recreating every symlink on the way
/// (`/lib -> usr/lib` of a merged /usr, `ld-linux-x86-64.so.2 -> …`), so the binaries find
/// their interpreter and libraries exactly where they were linked to look.
fn add_host_path(root: &Path, path: &Path, depth: u32) -> anyhow::Result<()> {
    if depth > 40 {
        bail!("too many levels of symbolic links");
    }
    let parts: Vec<Component> = path.components().filter(|c| matches!(c, Component::Normal(_))).collect();
    let mut host = PathBuf::from("/");
    for (i, part) in parts.iter().enumerate() {
        host.push(part);
        let meta = fs::symlink_metadata(&host).with_context(|| format!("reading {}", host.display()))?;
        if !meta.file_type().is_symlink() {
            continue;
        }
        let target = fs::read_link(&host)?;
        let inside = root.join(host.strip_prefix("/")?);
        match fs::symlink_metadata(&inside) {
            Ok(existing) if existing.file_type().is_symlink() && fs::read_link(&inside)? == target => {}
            Ok(_) => bail!("{} is a symlink on the machine but not in the image", host.display()),
            Err(_) => {
                fs::create_dir_all(inside.parent().context("no parent")?)?;
                symlink(&target, &inside)?;
            }
        }
        let mut resolved = host.parent().context("no parent")?.join(&target);
        resolved.extend(&parts[i + 1..]);
        return add_host_path(root, &normalize(&resolved), depth + 1);
    }
    let inside = root.join(host.strip_prefix("/")?);
    if fs::symlink_metadata(&inside).is_err() {
        copy_file(&host, &inside)?;
    }
    Ok(())
}

/// `..` taken lexically: right here because every prefix was resolved already.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for part in path.components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(name) => out.push(name),
            _ => {}
        }
    }
    out
}

fn copy_file(from: &Path, to: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(to.parent().context("no parent")?)?;
    fs::copy(from, to).with_context(|| format!("copying {} to the image", from.display()))?;
    Ok(())
}

fn chmod(path: &Path, mode: u32) -> anyhow::Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).with_context(|| format!("chmod {}", path.display()))
}

/// Paths, modes, symlink targets and contents, in a fixed order.
fn hash_tree(root: &Path, dir: &Path, hash: &mut Sha256) -> anyhow::Result<()> {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
    entries.sort();
    for path in entries {
        let meta = fs::symlink_metadata(&path)?;
        let name = path.strip_prefix(root)?.to_string_lossy().into_owned();
        hash.update(format!("{name}\0{:o}\0", meta.permissions().mode()));
        if meta.file_type().is_symlink() {
            hash.update(fs::read_link(&path)?.to_string_lossy().as_bytes());
        } else if meta.is_dir() {
            hash_tree(root, &path, hash)?;
        } else {
            hash.update(fs::read(&path)?);
        }
        hash.update([0]);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlink_targets_are_resolved_lexically() {
        assert_eq!(
            normalize(Path::new("/usr/lib64/../lib/x86_64-linux-gnu/libc.so.6")),
            Path::new("/usr/lib/x86_64-linux-gnu/libc.so.6")
        );
        assert_eq!(normalize(Path::new("/../lib")), Path::new("/lib"));
    }

    #[test]
    fn the_sshd_config_listens_on_the_address_only() {
        let config = sshd_config("127.0.5.10:2222");
        assert!(config.lines().any(|l| l == "ListenAddress 127.0.5.10:2222"));
        assert_eq!(config.matches("ListenAddress").count(), 1);
        assert!(config.contains("\nUsePAM no\n") && config.contains("\nPasswordAuthentication no\n"));
    }
}
