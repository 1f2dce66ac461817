//! The datahub inside its container, over SSH: PostgreSQL with pgvector, its own cluster in
//! [`DATA_DIR`] on the container's disk (which `infra destroy` keeps unless `--volumes`, so
//! the data survives every update and every destroy without it), run by the container's
//! service manager as the `postgres` account, listening on the container's address for the
//! deployment's subnet only (SCRAM passwords), and the shared directory.
//!
//! PostgreSQL comes from the template's packages: when no server is installed, Debian's
//! `postgresql-<version>` and `postgresql-<version>-pgvector` are installed with apt (the
//! Proxmox templates rivetctl expects are Debian's); a server without pgvector is an error
//! that says which package is missing. The role's password goes over standard input,
//! never on a command line.

use std::time::Duration;

use super::provision::{ProvisionError, ServiceManager, quote, script, script_with_input};
use crate::ssh::Session;

/// The cluster's data directory.
pub const DATA_DIR: &str = "/var/lib/postgresql/rivetos";
/// The datahub's service (both service managers).
pub const SERVICE: &str = "rivetos-datahub";
/// What rivetctl records of the datahub's service.
const RECORD: &str = "/etc/rivetos/datahub/record.json";

/// What the datahub serves.
#[derive(Debug, Clone)]
pub struct Database {
    /// The PostgreSQL major version asked for (`deployment.datahub.postgres_version`), used
    /// when it must be installed.
    pub version: String,
    pub user: String,
    pub name: String,
    pub password: String,
    pub port: u16,
    /// The container's address PostgreSQL listens on (besides localhost).
    pub listen: String,
    /// The network the agents connect from (CIDR).
    pub clients: String,
    /// The shared directory (`deployment.datahub.shared_mount_path`), when shared storage is on.
    pub shared: Option<String>,
}

/// The shell preamble that finds the server: `PGBIN` (the newest installed major version's
/// `bin`) and `RUNAS` (how to run a command as `postgres`).
const LOCATE: &str = r#"PGBIN=$(for d in /usr/lib/postgresql/*/bin; do [ -x "$d/postgres" ] && echo "$d"; done | sort -t/ -k5 -n | tail -n 1)
if command -v runuser >/dev/null 2>&1; then RUNAS="runuser -u postgres --"; elif command -v chpst >/dev/null 2>&1; then RUNAS="chpst -u postgres:postgres"; else RUNAS="su -s /bin/sh postgres -c"; fi"#;

/// A name for SQL (`"…"`).
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A literal for SQL (`'…'`).
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Installs PostgreSQL and pgvector unless they are there; the server's `bin` directory.
pub async fn ensure_installed(session: &Session, db: &Database) -> Result<String, ProvisionError> {
    let version = super::provision::checked("postgres_version", &db.version)?;
    let install = format!(
        r#"{LOCATE}
has_vector() {{ [ -n "$PGBIN" ] && {{ [ -f "$PGBIN/../share/postgresql/extension/vector.control" ] || [ -f "$PGBIN/../share/extension/vector.control" ] || ls /usr/share/postgresql/*/extension/vector.control >/dev/null 2>&1; }}; }}
if [ -z "$PGBIN" ] || ! has_vector; then
  if command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends postgresql-{version} postgresql-{version}-pgvector >/dev/null || exit 1
    # Debian's package makes a cluster of its own: rivetctl runs its own, in {DATA_DIR}.
    if command -v pg_dropcluster >/dev/null 2>&1; then pg_dropcluster --stop {version} main 2>/dev/null || true; fi
  else
    echo "PostgreSQL {version} with pgvector is not installed and there is no apt-get to install it" >&2; exit 1
  fi
  {LOCATE}
fi
[ -n "$PGBIN" ] || {{ echo "no PostgreSQL server found in /usr/lib/postgresql after installing postgresql-{version}" >&2; exit 1; }}
has_vector || {{ echo "pgvector is not installed for the server in $PGBIN (Debian: postgresql-<major>-pgvector)" >&2; exit 1; }}
id -u postgres >/dev/null 2>&1 || {{ echo "no postgres account" >&2; exit 1; }}
echo "$PGBIN""#
    );
    let out = script(session, "installing PostgreSQL with pgvector", &install).await?;
    Ok(out.lines().last().unwrap_or_default().trim().to_string())
}

/// Creates the cluster unless it exists, and writes the settings rivetctl owns: where it
/// listens, who may connect (the role to its database from `clients`, with a password).
pub async fn ensure_cluster(session: &Session, db: &Database) -> Result<(), ProvisionError> {
    let hba = format!(
        "# Managed by rivetctl; edits are overwritten.\nlocal all postgres peer\nlocal all all peer\nhost {name} {user} 127.0.0.1/32 scram-sha-256\nhost {name} {user} {clients} scram-sha-256\n",
        name = ident(&db.name),
        user = ident(&db.user),
        clients = db.clients,
    );
    let conf = format!(
        "# Managed by rivetctl; edits are overwritten.\nlisten_addresses = {listen}\nport = {port}\nunix_socket_directories = '/run/postgresql'\npassword_encryption = 'scram-sha-256'\n",
        listen = literal(&format!("localhost,{}", db.listen)),
        port = db.port,
    );
    let init = format!(
        r#"{LOCATE}
set -e
mkdir -p {DATA_DIR} /run/postgresql
chown postgres:postgres {DATA_DIR} /run/postgresql
chmod 0700 {DATA_DIR}
if [ ! -f {DATA_DIR}/PG_VERSION ]; then
  cd /tmp && $RUNAS "$PGBIN/initdb" -D {DATA_DIR} -U postgres --auth-local=peer --auth-host=scram-sha-256 -E UTF8 >/dev/null
fi
printf '%s' {conf} > {DATA_DIR}/rivetctl.conf.new && mv {DATA_DIR}/rivetctl.conf.new {DATA_DIR}/rivetctl.conf
printf '%s' {hba} > {DATA_DIR}/pg_hba.conf.new && mv {DATA_DIR}/pg_hba.conf.new {DATA_DIR}/pg_hba.conf
chown postgres:postgres {DATA_DIR}/rivetctl.conf {DATA_DIR}/pg_hba.conf
grep -q "^include_if_exists = 'rivetctl.conf'" {DATA_DIR}/postgresql.conf || echo "include_if_exists = 'rivetctl.conf'" >> {DATA_DIR}/postgresql.conf"#,
        conf = quote(&conf),
        hba = quote(&hba),
    );
    script(session, "preparing the PostgreSQL cluster", &init).await.map(|_| ())
}

/// The systemd unit of the datahub: PostgreSQL as `postgres`, nothing writable but its data
/// and socket directories.
pub fn systemd_unit(pgbin: &str) -> String {
    format!(
        "[Unit]\nDescription=RivetOS datahub (PostgreSQL with pgvector)\nAfter=network-online.target\nWants=network-online.target\n\n[Service]\nType=simple\nUser=postgres\nGroup=postgres\nRuntimeDirectory=postgresql\nRuntimeDirectoryPreserve=yes\nExecStart={pgbin}/postgres -D {DATA_DIR}\nExecReload=/bin/kill -HUP $MAINPID\nKillMode=mixed\nKillSignal=SIGINT\nTimeoutStopSec=120\nRestart=on-failure\nNoNewPrivileges=yes\nProtectSystem=strict\nReadWritePaths={DATA_DIR}\nProtectHome=yes\nPrivateTmp=yes\nPrivateDevices=yes\nProtectKernelTunables=yes\nProtectKernelModules=yes\nProtectControlGroups=yes\nRestrictSUIDSGID=yes\nLockPersonality=yes\nCapabilityBoundingSet=\n\n[Install]\nWantedBy=multi-user.target\n"
    )
}

/// Installs the datahub's service definition and (re)starts it; waits until PostgreSQL
/// accepts connections on its socket.
pub async fn start(
    session: &Session,
    manager: ServiceManager,
    pgbin: &str,
    restart: bool,
) -> Result<(), ProvisionError> {
    let pgbin = pgbin.trim();
    let verb = if restart { "restart" } else { "start" };
    let install = match manager {
        ServiceManager::Systemd => format!(
            "printf '%s' {unit} > /etc/systemd/system/{SERVICE}.service.new && mv /etc/systemd/system/{SERVICE}.service.new /etc/systemd/system/{SERVICE}.service && systemctl daemon-reload && systemctl enable {SERVICE}.service >/dev/null 2>&1 && systemctl {verb} {SERVICE}.service",
            unit = quote(&systemd_unit(pgbin))
        ),
        // SIGINT is PostgreSQL's fast shutdown; runit's TERM would be its smart one.
        ServiceManager::Runit => {
            let run = format!(
                "#!/bin/sh\nmkdir -p /run/postgresql /var/log/rivetos && chown postgres:postgres /run/postgresql\nexec >>/var/log/rivetos/datahub.log 2>&1\nexec chpst -u postgres:postgres {pgbin}/postgres -D {DATA_DIR}\n"
            );
            format!(
                "mkdir -p /etc/sv/{SERVICE}/control && printf '%s' {run} > /etc/sv/{SERVICE}/run.new && chmod 0755 /etc/sv/{SERVICE}/run.new && mv /etc/sv/{SERVICE}/run.new /etc/sv/{SERVICE}/run && \
                 printf '#!/bin/sh\\nkill -INT $(cat /etc/sv/{SERVICE}/supervise/pid)\\nexit 0\\n' > /etc/sv/{SERVICE}/control/t && chmod 0755 /etc/sv/{SERVICE}/control/t && \
                 [ -e /etc/service/{SERVICE} ] || ln -s /etc/sv/{SERVICE} /etc/service/{SERVICE}; \
                 {supervised}; sv -w 60 {verb} /etc/service/{SERVICE}",
                run = quote(&run),
                supervised = super::provision::supervised(SERVICE),
            )
        }
    };
    script(session, &format!("{verb} of {SERVICE}"), &install).await?;
    let wait = format!(
        "i=0; while ! {pgbin}/pg_isready -q -h /run/postgresql; do i=$((i+1)); [ $i -ge 300 ] && {{ echo 'PostgreSQL did not accept connections within 60 s' >&2; tail -n 20 /var/log/rivetos/datahub.log 2>/dev/null >&2; exit 1; }}; sleep 0.2; done"
    );
    script(session, "waiting for PostgreSQL", &wait).await.map(|_| ())
}

/// The role (with its password, sent over standard input), its database, pgvector in it,
/// and the shared directory with RivetOS's folders.
pub async fn ensure_database(session: &Session, pgbin: &str, db: &Database) -> Result<(), ProvisionError> {
    let (user, name) = (ident(&db.user), ident(&db.name));
    let sql = format!(
        "SELECT 'CREATE ROLE {user} LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {user_text})\\gexec\n\
         ALTER ROLE {user} WITH LOGIN PASSWORD {password};\n\
         SELECT 'CREATE DATABASE {name} OWNER {user}' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = {name_text})\\gexec\n\
         \\c {name}\n\
         CREATE EXTENSION IF NOT EXISTS vector;\n",
        user_text = literal(&db.user),
        name_text = literal(&db.name),
        password = literal(&db.password),
    );
    let run = format!(
        "{LOCATE}\ncd /tmp && $RUNAS {pgbin}/psql -X -q -v ON_ERROR_STOP=1 -h /run/postgresql -U postgres -d postgres -f - >/dev/null",
        pgbin = pgbin.trim()
    );
    script_with_input(session, "creating the role, the database and pgvector", &run, Some(sql.as_bytes())).await?;
    if let Some(shared) = &db.shared {
        let dirs = ["plans", "docs", "status", "whiteboard"].map(|d| format!("{}/{d}", quote(shared))).join(" ");
        let make = format!("mkdir -p {dirs} && chown {0}:{0} {1} {dirs}", super::provision::USER, quote(shared));
        script(session, "making the shared directory", &make).await?;
    }
    Ok(())
}

/// Whether PostgreSQL accepts connections, and the pgvector version in the database.
pub async fn health(session: &Session, db: &Database) -> (bool, Option<String>) {
    let check = format!(
        "{LOCATE}\n\"$PGBIN/pg_isready\" -q -h /run/postgresql -p {port} || exit 3\ncd /tmp && $RUNAS \"$PGBIN/psql\" -X -tA -h /run/postgresql -p {port} -U postgres -d {name} -c \"SELECT extversion FROM pg_extension WHERE extname = 'vector'\"",
        port = db.port,
        name = quote(&db.name),
    );
    match script(session, "checking PostgreSQL", &check).await {
        Ok(out) => (true, Some(out.trim().to_string()).filter(|v| !v.is_empty())),
        Err(_) => (false, None),
    }
}

/// Writes the datahub's record (what was applied: fields and spec hash).
pub async fn write_record(session: &Session, record: &str) -> Result<(), ProvisionError> {
    super::provision::write_private(session, "recording the datahub", RECORD, record.as_bytes()).await
}

/// The datahub's record and whether its service runs, if rivetctl installed it.
pub async fn found(session: &Session, manager: ServiceManager) -> Result<Option<(bool, String)>, ProvisionError> {
    let status = manager.unit_state(SERVICE);
    let read = format!("[ -f {RECORD} ] || exit 0; {status}; tr -d '\\n' < {RECORD}; echo");
    let out = script(session, "reading the datahub", &read).await?;
    let mut lines = out.lines();
    let Some(state) = lines.next() else { return Ok(None) };
    Ok(Some((state.trim() == "run", lines.next().unwrap_or_default().to_string())))
}

/// Stops the datahub's service and removes its definition; the data stays.
pub async fn stop(session: &Session, manager: ServiceManager, grace: Duration) -> Result<(), ProvisionError> {
    let wait = grace.as_secs().max(5);
    let remove = match manager {
        ServiceManager::Systemd => format!("systemctl disable --now {SERVICE}.service 2>/dev/null; rm -f {RECORD}"),
        ServiceManager::Runit => format!(
            "if [ -e /etc/service/{SERVICE} ]; then sv -w {wait} stop /etc/service/{SERVICE}; rm -f /etc/service/{SERVICE}; fi; rm -f {RECORD}"
        ),
    };
    script(session, &format!("stop of {SERVICE}"), &remove).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_names_and_values_are_quoted() {
        assert_eq!(ident("ri\"vet"), "\"ri\"\"vet\"");
        assert_eq!(literal("pa'ss"), "'pa''ss'");
    }

    #[test]
    fn the_datahub_unit_runs_postgres_unprivileged_and_sandboxed() {
        let unit = systemd_unit("/usr/lib/postgresql/16/bin");
        for line in [
            "User=postgres",
            "ExecStart=/usr/lib/postgresql/16/bin/postgres -D /var/lib/postgresql/rivetos",
            "ProtectSystem=strict",
            "ReadWritePaths=/var/lib/postgresql/rivetos",
            "NoNewPrivileges=yes",
            "KillSignal=SIGINT",
        ] {
            assert!(unit.lines().any(|l| l == line), "{line}");
        }
    }
}
