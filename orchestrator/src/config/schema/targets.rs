//! The settings of each target under `deployment:` (Docker and its engines' TLS, Proxmox
//! VE, Kubernetes): rivetctl's additions, declared as the rest of the schema is.

use super::*;

/// Client TLS for a `tcp://` Docker Engine, as the Docker CLI's `--tlscacert`, `--tlscert`,
/// `--tlskey` (`DOCKER_CERT_PATH`'s `ca.pem`, `cert.pem`, `key.pem`).
pub(super) const ENGINE_TLS: Object = Object {
    unknown: Unknown::Warn("Unknown key \"{key}\" in \"{path}\""),
    fields: &[
        Field::new(
            "ca",
            &STR,
            "rivetctl: CA certificate (PEM) the engine's certificate must be signed by; the only CA trusted. Relative to the config's directory.",
        )
        .required(),
        Field::new("cert", &STR, "rivetctl: client certificate (PEM) presented to the engine.").required(),
        Field::new("key", &STR, "rivetctl: private key (PEM) of `cert`; keep it private (mode 0600).").required(),
    ],
};

pub(super) const DOCKER: Object = Object {
    unknown: Unknown::Warn("Unknown key \"{key}\" in \"{path}\""),
    fields: &[
        Field::new("network", &NAME, "Docker network joined by every container.").default(S("rivetos-net")),
        Field::new(
            "postgres_port",
            &PORT,
            "Host port where the datahub's PostgreSQL is published; 0 = do not publish.",
        )
        .default(I(5432))
        .hint("use 0 to keep the datahub unpublished"),
        Field::new("project_name", &NAME, "Prefix of container and volume names.").default(S("rivetos")),
        Field::new(
            "host",
            &ENDPOINT,
            "rivetctl: Docker Engine to use when no `deployment.nodes` are given: `unix:///path`, `tcp://host:port` or `ssh://user@host[:port]`. Default: `DOCKER_HOST`, else the local socket.",
        ),
        Field::new(
            "postgres_bind",
            &HOST,
            "rivetctl: host address the published PostgreSQL port binds to; agents on other nodes need one they reach, such as the datahub node's LAN address (`0.0.0.0` is warned about).",
        )
        .default(S("127.0.0.1")),
        Field::new(
            "tls",
            &Ty::Object(&ENGINE_TLS),
            "rivetctl: TLS with a client certificate for a `tcp://` engine (`host`, or `DOCKER_HOST` when it is `tcp://`). Without it, `DOCKER_TLS_VERIFY` and `DOCKER_CERT_PATH` apply as for the Docker CLI.",
        ),
        Field::new(
            "insecure",
            &BOOL,
            "rivetctl: allow plain HTTP to a `tcp://` engine without TLS. Anyone on the path can then run containers as root on it; every run warns.",
        )
        .default(B(false)),
    ],
};

const PVE_NODE: Object = Object {
    unknown: Unknown::Warn("Unknown key \"{key}\" in \"{path}\""),
    fields: &[
        Field::new("name", &NAME, "Proxmox node name (as in the cluster).")
            .required()
            .missing("Node requires a string \"name\"")
            .invalid("Node requires a string \"name\""),
        Field::new("host", &HOST, "Address of the node (for SSH)."),
        Field::new("role", &Ty::Enum(ROLES), "What runs on this node.")
            .required()
            .missing("Node role must be one of: datahub, agents, both")
            .invalid("Node role must be one of: datahub, agents, both"),
        Field::new("ctid_start", &Ty::Int { min: 100, max: 999_999_999 }, "First container ID used on this node."),
    ],
};

const PVE_NETWORK: Object = Object {
    unknown: Unknown::Warn("Unknown key \"{key}\" in \"{path}\""),
    fields: &[
        Field::new("bridge", &NAME, "Bridge the containers' eth0 joins.").default(S("vmbr0")),
        Field::new(
            "subnet",
            &Ty::Text(&crate::config::rules::CIDR),
            "Subnet for container addresses, e.g. `10.4.0.0/24`; containers get addresses from `.10` up.",
        ),
        Field::new("gateway", &Ty::Text(&crate::config::rules::IP), "Default gateway of the containers."),
    ],
};

pub(super) const PROXMOX: Object = Object {
    unknown: Unknown::Warn("Unknown key \"{key}\" in \"{path}\""),
    fields: &[
        Field::new(
            "api_url",
            &Ty::Text(&crate::config::rules::HTTPS_URL),
            "Proxmox VE API, e.g. `https://pve1:8006/api2/json`.",
        ),
        Field::new("nodes", &Ty::List(&Ty::Object(&PVE_NODE)), "Proxmox nodes and what runs on each."),
        Field::new("network", &Ty::Object(&PVE_NETWORK), "Container networking."),
        Field::new("token_id", &STR, "rivetctl: API token id, `user@realm!name`."),
        Field::new("token_secret", &STR, "rivetctl: API token secret; use `${PVE_TOKEN_SECRET}` from `.env`."),
        Field::new(
            "fingerprint",
            &STR,
            "rivetctl: SHA-256 fingerprint of the API's TLS certificate (self-signed clusters).",
        ),
        Field::new("ca_file", &STR, "rivetctl: CA certificate file that signed the API's TLS certificate."),
        Field::new(
            "insecure",
            &BOOL,
            "rivetctl: accept any TLS certificate from the API (no fingerprint, CA or system root checks). Anyone on the path can then read the API token; every run warns.",
        )
        .default(B(false)),
        Field::new("template", &STR, "rivetctl: OS template volume for new containers.")
            .default(S("local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst")),
        Field::new("storage", &NAME, "rivetctl: storage for container root disks.").default(S("local-lvm")),
        Field::new("rootfs_gb", &Ty::Int { min: 1, max: 131_072 }, "rivetctl: root disk size in GiB.").default(I(8)),
        Field::new("memory_mb", &Ty::Int { min: 16, max: 1_048_576 }, "rivetctl: memory of each container in MiB.")
            .default(I(2048)),
        Field::new("swap_mb", &Ty::Int { min: 0, max: 1_048_576 }, "rivetctl: swap of each container in MiB.")
            .default(I(512)),
        Field::new("cores", &Ty::Int { min: 1, max: 8192 }, "rivetctl: CPU cores of each container.").default(I(2)),
        Field::new("unprivileged", &BOOL, "rivetctl: create unprivileged containers (strongly recommended).")
            .default(B(true)),
        Field::new(
            "ssh_public_keys",
            &STR,
            "rivetctl: authorized keys installed for root in new containers (key login only).",
        ),
        Field::new(
            "ssh_port",
            &PORT1,
            "rivetctl: port of sshd in the containers, where rivetctl provisions and updates the agents (as root, with `deployment.ssh.identity_file`, host keys pinned from the create task).",
        )
        .default(I(22)),
        Field::new(
            "service_manager",
            &Ty::Enum(SERVICE_MANAGERS),
            "rivetctl: what runs the agents' services in the containers: `systemd` (the OS template's init, hardened units `rivetos@<agent>`) or `runit` (containers whose init is runit).",
        )
        .default(S("systemd")),
    ],
};

/// `deployment.proxmox.service_manager`.
pub const SERVICE_MANAGERS: &[&str] = &["systemd", "runit"];

const K8S_RESOURCES: Object = Object {
    unknown: Unknown::Warn("Unknown key \"{key}\" in \"{path}\""),
    fields: &[
        Field::new("cpu", &QUANTITY, "CPU request and limit of each agent pod, a Kubernetes quantity such as `500m`."),
        Field::new("memory", &QUANTITY, "Memory request and limit of each agent pod, such as `1Gi`."),
    ],
};

pub(super) const KUBERNETES: Object = Object {
    unknown: Unknown::Warn("Unknown key \"{key}\" in \"{path}\""),
    fields: &[
        Field::new("namespace", &NAME, "Namespace holding the deployment.").default(S("rivetos")),
        Field::new(
            "create_namespace",
            &BOOL,
            "rivetctl: create and own the namespace (needs a ClusterRole for namespaces); by default it must exist and rivetctl needs only a namespaced Role.",
        )
        .default(B(false)),
        Field::new("storage_class", &NAME, "StorageClass of the datahub's volume; the cluster default when unset."),
        Field::new("resources", &Ty::Object(&K8S_RESOURCES), "Agent pod resources."),
        Field::new("context", &STR, "rivetctl: kubeconfig context; the current context when unset."),
        Field::new(
            "version",
            &KUBE_VERSION,
            "rivetctl: Kubernetes version the offline rendering (`infra preview --out` with no cluster) targets; against a live cluster the server's own version and APIs decide.",
        )
        .default(S("1.33")),
        Field::new("storage_size", &QUANTITY, "rivetctl: size of the datahub's PersistentVolumeClaim.")
            .default(S("10Gi")),
        Field::new("shared_storage_size", &QUANTITY, "rivetctl: size of the shared PersistentVolumeClaim.")
            .default(S("1Gi")),
        Field::new(
            "shared_storage_class",
            &NAME,
            "rivetctl: StorageClass of the shared volume, which needs ReadWriteMany.",
        ),
    ],
};
