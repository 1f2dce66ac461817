//! The image of the stand-ins, assembled from the machine's own files because nothing can be
//! pulled: busybox (static) for a shell and the usual tools, OpenSSH's `sshd` and runit with
//! every shared library `ldd` names for them, the accounts and directories sshd insists on;
//! and a real PostgreSQL server with pgvector, where Debian's `postgresql-16` and
//! `postgresql-16-pgvector` put theirs in a Proxmox template, taken from the relocatable
//! install the PyPI package `pgserver` ships (there is no Debian package to take it from).
//! It is tagged with a hash of its content, so a changed host file (a library upgrade) makes
//! a new image instead of reusing a stale one, and an unchanged machine builds it once.

use std::collections::BTreeSet;
use std::ffi::OsString;
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
/// `postgres` is the system account Debian's postgresql-common makes (its home the clusters'
/// parent, locked like the others), with the id of the `postgres` of Docker's official images.
const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
    sshd:x:100:65534:sshd privilege separation:/run/sshd:/bin/false\n\
    postgres:x:999:999:PostgreSQL administrator:/var/lib/postgresql:/bin/sh\n\
    nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
const GROUP: &str = "root:x:0:\npostgres:x:999:\nnogroup:x:65534:\n";
const SHADOW: &str = "root:*:19000:0:99999:7:::\nsshd:*:19000:0:99999:7:::\n\
    postgres:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n";
/// glibc ≥ 2.34 has the `files` service built in; the file only says so explicitly.
const NSSWITCH: &str = "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n";
/// runit starts sshd in the foreground, its log on stdout (so in `docker logs`).
const SSHD_RUN: &str = "#!/bin/sh\nexec /usr/sbin/sshd -D -e -f /etc/ssh/sshd_config 2>&1\n";

/// The directories of PostgreSQL that are `postgres`'s, as Debian's packages leave them. `COPY`
/// makes everything root's, so the image's own busybox sets them (`docker build --network none`).
const DOCKERFILE: &str = "FROM scratch\n\
    COPY rootfs/ /\n\
    ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n\
    ENV SVDIR=/etc/service\n\
    RUN chown 999:999 /run/postgresql /var/lib/postgresql && chmod 2775 /run/postgresql \
        && chmod 755 /var/lib/postgresql\n\
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

/// Where the stand-ins' PostgreSQL comes from: this variable, naming a `pginstall` directory,
/// or else the `pgserver` package of the `python3` on the `PATH` or of the virtual environment
/// scripts/install-prerequisites.sh makes when the system Python takes no pip installs.
const PGINSTALL_ENV: &str = "RIVET_TESTKIT_PGINSTALL";
const PYTHONS: [&str; 2] = ["python3", "/opt/rivetctl/pgserver/bin/python3"];
/// Prints the package's `pginstall` without importing it (its import has side effects).
const FIND_PGINSTALL: &str = "import importlib.util, os\n\
    spec = importlib.util.find_spec('pgserver')\n\
    print(os.path.join(spec.submodule_search_locations[0], 'pginstall') if spec else '')\n";
/// Debian's postgresql-client-common puts these on the `PATH` (as links to its `pg_wrapper`);
/// here they link to the one version's binaries directly.
const CLIENTS: [&str; 9] =
    ["psql", "pg_isready", "pg_dump", "pg_dumpall", "pg_restore", "createdb", "createuser", "dropdb", "dropuser"];

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
    let postgres = pginstall(std::env::var_os(PGINSTALL_ENV))?;
    assemble(&rootfs, &postgres).context("assembling the stand-in image from the machine's files")?;
    fs::write(context.path().join("Dockerfile"), DOCKERFILE)?;
    let mut hash = Sha256::new();
    hash.update(DOCKERFILE);
    hash_tree(&rootfs, &rootfs, &mut hash)?;
    let tag = format!("rivet-testkit/pve-ct:{}", &hex::encode(hash.finalize())[..12]);
    if !present(&tag)? {
        let out = Command::new("docker")
            .args(["build", "-q", "--network", "none", "-t", &tag])
            .arg(context.path())
            .output()?;
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

fn assemble(root: &Path, postgres: &PgInstall) -> anyhow::Result<()> {
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
        libraries.extend(ldd(Path::new(binary))?);
    }
    for library in &libraries {
        add_host_path(root, library, 0).with_context(|| format!("copying {}", library.display()))?;
    }
    if Path::new(MODULI).exists() {
        copy_file(Path::new(MODULI), &root.join("etc/ssh/moduli"))?;
    }
    add_postgres(root, postgres)
        .with_context(|| format!("adding PostgreSQL {} from {}", postgres.major, postgres.dir.display()))?;

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

/// pgserver's relocatable PostgreSQL install: its directory and the major version.
#[derive(Debug)]
struct PgInstall {
    dir: PathBuf,
    major: String,
}

/// Finds pgserver's `pginstall` (`env`: the value of [`PGINSTALL_ENV`]); never a stand-in
/// image without PostgreSQL.
fn pginstall(env: Option<OsString>) -> anyhow::Result<PgInstall> {
    let install = "run `python3 -m pip install pgserver` (scripts/install-prerequisites.sh does)";
    let dir = match env.filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => {
            let mut tried = Vec::new();
            let found =
                PYTHONS.iter().find_map(|python| match Command::new(python).args(["-c", FIND_PGINSTALL]).output() {
                    Ok(out) if out.status.success() && !String::from_utf8_lossy(&out.stdout).trim().is_empty() => {
                        Some(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
                    }
                    Ok(out) if out.status.success() => {
                        tried.push(format!("{python}: no module pgserver"));
                        None
                    }
                    Ok(out) => {
                        let stderr = String::from_utf8_lossy(&out.stderr);
                        tried.push(format!("{python}: {}", stderr.trim().lines().last().unwrap_or("failed")));
                        None
                    }
                    Err(err) => {
                        tried.push(format!("{python}: {err}"));
                        None
                    }
                });
            found.with_context(|| {
                format!(
                    "the stand-in image needs PostgreSQL with pgvector from the PyPI package pgserver, \
                     and no Python here has it ({}): {install}, or set {PGINSTALL_ENV} to its pginstall directory",
                    tried.join("; ")
                )
            })?
        }
    };
    let postgres = dir.join("bin/postgres");
    if !postgres.is_file() {
        bail!(
            "{} has no bin/postgres, so it is not pgserver's pginstall directory: {install}, or set \
             {PGINSTALL_ENV} to that directory",
            dir.display()
        );
    }
    let dir = dir.canonicalize().with_context(|| format!("resolving {}", dir.display()))?;
    let out =
        Command::new(&postgres).arg("--version").output().with_context(|| format!("running {}", postgres.display()))?;
    let version = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("{} --version failed: {}", postgres.display(), String::from_utf8_lossy(&out.stderr).trim());
    }
    let major =
        major(&version).with_context(|| format!("{} --version said {:?}", postgres.display(), version.trim()))?;
    Ok(PgInstall { dir, major })
}

/// `16` of `postgres (PostgreSQL) 16.2` (a major version is one number since PostgreSQL 10).
fn major(version: &str) -> Option<String> {
    let number = version.trim().strip_prefix("postgres (PostgreSQL) ")?;
    let major: String = number.chars().take_while(char::is_ascii_digit).collect();
    (!major.is_empty()).then_some(major)
}

/// The install at `/usr/lib/postgresql/<major>/`, its layout kept: its programs find their
/// `share/postgresql` and `lib/postgresql` relative to themselves. Debian's paths lead there
/// too: `/usr/share/postgresql/<major>/` (the extensions' control files), the modules in
/// `lib/` (`vector.so`) and the client programs in `/usr/bin`. The libraries its ELF files
/// need go where they look for them: the machine's at their paths, pgserver's own (auditwheel
/// puts them in `pgserver.libs`, found through `$ORIGIN/../../../pgserver.libs`) the same way
/// up from where the file is in the image.
fn add_postgres(root: &Path, postgres: &PgInstall) -> anyhow::Result<()> {
    let prefix = Path::new("/usr/lib/postgresql").join(&postgres.major);
    let inside = |path: &Path| root.join(path.strip_prefix("/").unwrap_or(path));
    copy_tree(&postgres.dir, &inside(&prefix))?;
    let mut elves = Vec::new();
    elf_files(&postgres.dir, &mut elves)?;
    let mut libraries = BTreeSet::new();
    for file in &elves {
        let origin = file.parent().context("no parent")?;
        let image_origin = prefix.join(origin.strip_prefix(&postgres.dir)?);
        for library in ldd(file)? {
            match library.strip_prefix(origin) {
                Ok(relative) => {
                    let target = inside(&normalize(&image_origin.join(relative)));
                    if fs::symlink_metadata(&target).is_err() {
                        copy_file(&library, &target)?;
                    }
                }
                Err(_) => {
                    libraries.insert(library);
                }
            }
        }
    }
    for library in &libraries {
        add_host_path(root, library, 0).with_context(|| format!("copying {}", library.display()))?;
    }

    let major = &postgres.major;
    let share = root.join("usr/share/postgresql");
    fs::create_dir_all(&share)?;
    symlink(format!("../../lib/postgresql/{major}/share/postgresql"), share.join(major))?;
    let lib = inside(&prefix.join("lib"));
    for entry in fs::read_dir(lib.join("postgresql"))? {
        let name = entry?.file_name();
        if name.to_string_lossy().ends_with(".so") && fs::symlink_metadata(lib.join(&name)).is_err() {
            symlink(Path::new("postgresql").join(&name), lib.join(&name))?;
        }
    }
    for client in CLIENTS {
        if inside(&prefix.join("bin").join(client)).is_file() {
            symlink(format!("../lib/postgresql/{major}/bin/{client}"), root.join("usr/bin").join(client))?;
        }
    }
    for dir in ["run/postgresql", "var/lib/postgresql"] {
        fs::create_dir_all(root.join(dir))?;
    }
    Ok(())
}

/// `from`'s files, directories and symlinks at `to`, modes kept.
fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let (source, target) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type()?;
        if kind.is_symlink() {
            symlink(fs::read_link(&source)?, &target)?;
        } else if kind.is_dir() {
            copy_tree(&source, &target)?;
        } else {
            copy_file(&source, &target)?;
        }
    }
    Ok(())
}

/// The executables and shared objects under `dir` (ELF type 2 or 3), not following symlinks.
fn elf_files(dir: &Path, found: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
    entries.sort();
    for path in entries {
        let kind = fs::symlink_metadata(&path)?.file_type();
        if kind.is_dir() {
            elf_files(&path, found)?;
        } else if kind.is_file() {
            let mut head = [0u8; 18];
            let n = std::io::Read::read(&mut fs::File::open(&path)?, &mut head)?;
            if n == head.len() && head.starts_with(b"\x7fELF") && matches!(head[16], 2 | 3) {
                found.push(path);
            }
        }
    }
    Ok(())
}

/// The libraries (and the loader) `ldd` names, at the paths it names them.
fn ldd(binary: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out = Command::new("ldd").arg(binary).output().context("running ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let binary = binary.display();
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
    fn the_major_version_is_the_first_number() {
        assert_eq!(major("postgres (PostgreSQL) 16.2\n").as_deref(), Some("16"));
        assert_eq!(major("postgres (PostgreSQL) 17beta1").as_deref(), Some("17"));
        assert_eq!(major("postgres (PostgreSQL) 18.0 (Debian 18.0-1)").as_deref(), Some("18"));
        assert_eq!(major("psql (PostgreSQL) 16.2"), None);
    }

    #[test]
    fn a_pginstall_without_postgres_is_refused_with_what_to_do() {
        let err = pginstall(Some("/nonexistent/pginstall".into())).unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "/nonexistent/pginstall has no bin/postgres, so it is not pgserver's pginstall directory: run \
             `python3 -m pip install pgserver` (scripts/install-prerequisites.sh does), or set \
             RIVET_TESTKIT_PGINSTALL to that directory"
        );
    }

    #[test]
    fn the_sshd_config_listens_on_the_address_only() {
        let config = sshd_config("127.0.5.10:2222");
        assert!(config.lines().any(|l| l == "ListenAddress 127.0.5.10:2222"));
        assert_eq!(config.matches("ListenAddress").count(), 1);
        assert!(config.contains("\nUsePAM no\n") && config.contains("\nPasswordAuthentication no\n"));
    }
}
