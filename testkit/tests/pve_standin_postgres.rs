//! The stand-in image carries a real PostgreSQL 16 with pgvector where Debian's
//! `postgresql-16` and `postgresql-16-pgvector` put theirs: a cluster made with `initdb` as
//! `postgres`, the server run on its socket in /run/postgresql, and `CREATE EXTENSION vector`
//! computing a distance. Needs the machine's Docker Engine and the PyPI package pgserver
//! (scripts/install-prerequisites.sh installs it); fails, never skips, without them.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use rivet_testkit::proxmox::standin::DockerStandins;

const BIN: &str = "/usr/lib/postgresql/16/bin";
const DATA: &str = "/var/lib/postgresql/data";

/// A container of the image, removed on every path out of the test.
struct Running(String);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", "-v", &self.0]).output();
    }
}

impl Running {
    /// `docker exec -u <user> <container> <argv>`, whatever its status.
    fn exec_status(&self, user: &str, argv: &[&str]) -> Output {
        Command::new("docker")
            .args(["exec", "-u", user, &self.0])
            .args(argv)
            .output()
            .expect("the docker CLI must be installed")
    }

    /// As [`Running::exec_status`]; its stdout, the test failing unless it exits 0.
    fn exec(&self, user: &str, argv: &[&str]) -> String {
        let out = self.exec_status(user, argv);
        assert!(
            out.status.success(),
            "docker exec -u {user} {} {argv:?}: {}\nstdout: {}\nstderr: {}",
            self.0,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn sh(&self, user: &str, script: &str) -> String {
        self.exec(user, &["/bin/sh", "-c", script])
    }
}

#[test]
fn the_image_runs_postgresql_with_pgvector_as_debian_lays_it_out() {
    let standins = DockerStandins::new("standin-postgres", 22).unwrap_or_else(|e| panic!("{e:#}"));
    let name = format!("rivet-pve-postgres-test-{}", std::process::id());
    let _ = Command::new("docker").args(["rm", "-f", "-v", &name]).output();
    let out = Command::new("docker")
        .args(["run", "-d", "--name", &name, "--network", "none", standins.image()])
        .output()
        .expect("the docker CLI must be installed");
    let ct = Running(name);
    assert!(out.status.success(), "docker run: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(ct.exec("root", &["cat", "/proc/1/comm"]).trim(), "runsvdir");

    // 1. Debian's layout: one version under /usr/lib/postgresql, its share and modules where
    //    postgresql-16-pgvector puts vector's, the clients on the PATH, and postgres's dirs.
    assert_eq!(ct.exec("root", &["ls", "/usr/lib/postgresql"]).trim(), "16");
    let version = ct.exec("postgres", &[&format!("{BIN}/postgres"), "--version"]);
    assert!(version.starts_with("postgres (PostgreSQL) 16."), "{version}");
    ct.sh(
        "root",
        "test -f /usr/share/postgresql/16/extension/vector.control && \
         test -f /usr/lib/postgresql/16/lib/vector.so && \
         test -f /usr/lib/postgresql/16/lib/postgresql/vector.so",
    );
    assert_eq!(
        ct.sh("root", "command -v psql; command -v pg_isready").lines().collect::<Vec<_>>(),
        ["/usr/bin/psql", "/usr/bin/pg_isready"]
    );
    assert_eq!(ct.exec("root", &["id", "postgres"]).trim(), "uid=999(postgres) gid=999(postgres) groups=999(postgres)");
    let owners = ct.exec("root", &["stat", "-c", "%a %U:%G %n", "/run/postgresql", "/var/lib/postgresql"]);
    assert_eq!(
        owners.lines().collect::<Vec<_>>(),
        ["2775 postgres:postgres /run/postgresql", "755 postgres:postgres /var/lib/postgresql"]
    );
    // Relocated: the binaries find their share and modules relative to themselves.
    let dirs = ct.exec("postgres", &[&format!("{BIN}/pg_config"), "--sharedir", "--pkglibdir"]);
    assert_eq!(
        dirs.lines().collect::<Vec<_>>(),
        ["/usr/lib/postgresql/16/share/postgresql", "/usr/lib/postgresql/16/lib/postgresql"]
    );
    // Every program has its libraries in the image.
    ct.sh("postgres", &format!("for p in {BIN}/*; do \"$p\" --version >/dev/null || exit 1; done"));

    // 2. A cluster, the server on its socket only, and pgvector in it.
    let init = ct.exec("postgres", &[&format!("{BIN}/initdb"), "-D", DATA, "-U", "postgres", "--auth=trust"]);
    assert!(init.contains("Success."), "{init}");
    let start = format!(
        "exec {BIN}/postgres -D {DATA} -k /run/postgresql -c listen_addresses='' \
         >/var/lib/postgresql/postgres.log 2>&1"
    );
    let out = Command::new("docker").args(["exec", "-d", "-u", "postgres", &ct.0, "/bin/sh", "-c", &start]).output();
    assert!(out.unwrap().status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = ct.exec_status("postgres", &["pg_isready", "-h", "/run/postgresql"]);
        if ready.status.success() {
            break;
        }
        if Instant::now() > deadline {
            let log = ct.exec_status("root", &["cat", "/var/lib/postgresql/postgres.log"]);
            panic!(
                "pg_isready still says {:?} after 30 s; the server's log:\n{}",
                String::from_utf8_lossy(&ready.stdout).trim(),
                String::from_utf8_lossy(&log.stdout)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let sql = "CREATE EXTENSION vector; SELECT '[1,2,3]'::vector <-> '[1,2,4]'::vector;";
    let out = ct.exec(
        "postgres",
        &["psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-h", "/run/postgresql", "-U", "postgres", "-c", sql],
    );
    assert_eq!(out.lines().last(), Some("1"), "{out}");
    let installed = ct.exec(
        "postgres",
        &[
            "psql",
            "-X",
            "-At",
            "-h",
            "/run/postgresql",
            "-U",
            "postgres",
            "-c",
            "SELECT extname FROM pg_extension ORDER BY 1",
        ],
    );
    assert_eq!(installed.lines().collect::<Vec<_>>(), ["plpgsql", "vector"]);
}
