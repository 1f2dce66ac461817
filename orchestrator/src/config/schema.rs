//! The shape of `rivet.config.yaml`, written down once as data.
//!
//! One declaration drives three things that must never disagree: the checker that reports
//! every error with its position ([`super::check`]), the defaults filled into the typed model,
//! and the JSON Schema printed by `rivetctl config schema` ([`super::json_schema`]).
//! Upstream RivetOS fields keep their names, defaults and messages; rivetctl's additions live
//! under `deployment:` and are marked as such in their docs.

/// What a value must look like.
#[derive(Debug)]
pub enum Ty {
    /// A string; plain numbers are accepted and kept as their text (`postgres_version: 16`).
    Str,
    Bool,
    Int {
        min: i64,
        max: i64,
    },
    Number {
        min: f64,
        max: f64,
    },
    Enum(&'static [&'static str]),
    /// A string checked (and normalised) by a rule.
    Text(&'static TextRule),
    List(&'static Ty),
    /// An object with keys chosen by the user (env vars, agent ids, build args).
    Map(&'static Ty),
    Object(&'static Object),
    /// Anything: belongs to the RivetOS runtime, kept as written.
    Any,
}

/// A string format with its own check and normalisation.
#[derive(Debug)]
pub struct TextRule {
    /// What to expect, for messages: "a duration such as `30s` or `5m`".
    pub expected: &'static str,
    /// A regular expression for the JSON Schema (editors); the check below is authoritative.
    pub pattern: &'static str,
    /// What to write instead, for the `hint:` line.
    pub hint: &'static str,
    /// Returns the normalised value, or `None` when the text does not fit.
    pub check: fn(&str) -> Option<serde_json::Value>,
}

/// What to do with keys that no field declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unknown {
    /// Warn with this message (`{key}` and `{path}` are replaced) and a did-you-mean.
    Warn(&'static str),
    /// Keep silently: the RivetOS runtime owns them.
    Keep,
}

/// An object type.
#[derive(Debug)]
pub struct Object {
    pub fields: &'static [Field],
    pub unknown: Unknown,
}

/// A default value.
#[derive(Debug, Clone, Copy)]
pub enum DefaultValue {
    Str(&'static str),
    Bool(bool),
    Int(i64),
    Num(f64),
}

/// One declared key.
#[derive(Debug)]
pub struct Field {
    pub name: &'static str,
    pub ty: &'static Ty,
    pub required: bool,
    pub default: Option<DefaultValue>,
    pub doc: &'static str,
    /// Message when the value is wrong (`{value}` is replaced); otherwise a generic one.
    pub invalid: Option<&'static str>,
    /// Message when a required field is missing; otherwise a generic one.
    pub missing: Option<&'static str>,
    /// A hint printed under errors of this field.
    pub hint: Option<&'static str>,
}

impl Field {
    const fn new(name: &'static str, ty: &'static Ty, doc: &'static str) -> Field {
        Field { name, ty, required: false, default: None, doc, invalid: None, missing: None, hint: None }
    }
    const fn required(mut self) -> Field {
        self.required = true;
        self
    }
    const fn default(mut self, value: DefaultValue) -> Field {
        self.default = Some(value);
        self
    }
    const fn invalid(mut self, message: &'static str) -> Field {
        self.invalid = Some(message);
        self
    }
    const fn missing(mut self, message: &'static str) -> Field {
        self.missing = Some(message);
        self
    }
    const fn hint(mut self, hint: &'static str) -> Field {
        self.hint = Some(hint);
        self
    }
}

use DefaultValue::{Bool as B, Int as I, Num as N, Str as S};

const STR: Ty = Ty::Str;
const BOOL: Ty = Ty::Bool;
const PORT: Ty = Ty::Int { min: 0, max: 65535 };
const PORT1: Ty = Ty::Int { min: 1, max: 65535 };
const ANY: Ty = Ty::Any;
const STR_LIST: Ty = Ty::List(&STR);
const STR_MAP: Ty = Ty::Map(&STR);
const DURATION: Ty = Ty::Text(&super::rules::DURATION);
const SIZE: Ty = Ty::Text(&super::rules::MEMORY);
const NAME: Ty = Ty::Text(&super::rules::NAME);
const HOST: Ty = Ty::Text(&super::rules::HOST);
const QUANTITY: Ty = Ty::Text(&super::rules::QUANTITY);
const ABS_PATH: Ty = Ty::Text(&super::rules::ABS_PATH);
const KUBE_VERSION: Ty = Ty::Text(&super::rules::KUBE_VERSION);
const URL_PATH: Ty = Ty::Text(&super::rules::URL_PATH);
const PG_VERSION: Ty = Ty::Text(&super::rules::PG_VERSION);
const PARALLEL: Ty = Ty::Text(&super::rules::PARALLEL);
const ENDPOINT: Ty = Ty::Text(&super::rules::ENDPOINT);
const ENV_NAME_MAP: Ty = Ty::Map(&STR);

/// The set of deployment targets, in upstream's order.
mod targets;

use targets::{DOCKER, ENGINE_TLS, KUBERNETES, PROXMOX};

pub const TARGETS: &[&str] = &["docker", "proxmox", "kubernetes", "manual"];
/// Node roles, in upstream's order.
pub const ROLES: &[&str] = &["datahub", "agents", "both"];
pub const IMAGE_DELIVERY: &[&str] = &["ship", "pull"];

const DATAHUB: Object = Object {
    unknown: Unknown::Warn("Unknown key \"{key}\" in \"{path}\""),
    fields: &[
        Field::new("postgres", &BOOL, "Run PostgreSQL (with pgvector) as the datahub. `false`: agents use the database in `RIVETOS_PG_URL` from `.env`.").default(B(true)),
        Field::new("postgres_version", &PG_VERSION, "PostgreSQL major version of the datahub image. Changing it replaces the datahub: data files of one major version cannot be opened by another.").default(S("16")),
        Field::new("shared_storage", &BOOL, "Create the shared volume mounted into the datahub and every agent.").default(B(true)),
        Field::new("shared_mount_path", &ABS_PATH, "Where the shared volume is mounted in containers.").default(S("/rivet-shared")),
    ],
};

const IMAGE: Object = Object {
    unknown: Unknown::Warn("Unknown key \"{key}\" in \"{path}\""),
    fields: &[
        Field::new(
            "registry",
            &STR,
            "Registry prefix of prebuilt images (used when `build_from_source` is false); on Kubernetes, also where images built from source are pushed (unless `--no-push`).",
        )
            .default(S("ghcr.io/philbert440")),
        Field::new("agent_image", &STR, "Repository name of the agent image.").default(S("rivetos-agent")),
        Field::new("tag", &STR, "Tag of prebuilt images (used when `build_from_source` is false).")
            .default(S("latest")),
        Field::new(
            "build_from_source",
            &BOOL,
            "Build images from `deployment.source`; tags are content hashes of the build inputs.",
        )
        .default(B(true)),
        Field::new(
            "datahub_image",
            &STR,
            "rivetctl: repository name of the datahub image when it is built from source (older layout) or prebuilt.",
        )
        .default(S("rivetos-datahub")),
    ],
};

const DOCKERFILES: Object = Object {
    unknown: Unknown::Warn("Unknown key \"{key}\" in \"{path}\""),
    fields: &[
        Field::new(
            "agent",
            &STR,
            "Dockerfile of the agent image, relative to the source root. Default: `infra/containers/rivetos/Dockerfile` if present, else `containers/agent/Dockerfile`.",
        ),
        Field::new(
            "datahub",
            &STR,
            "Dockerfile of the datahub image. Default: `containers/datahub/Dockerfile` if present; otherwise the datahub uses the prebuilt `pgvector/pgvector:pg<postgres_version>`.",
        ),
    ],
};

const SOURCE: Object = Object {
    unknown: Unknown::Warn("Unknown key \"{key}\" in \"{path}\""),
    fields: &[
        Field::new("path", &STR, "Local checkout of the RivetOS source, relative to the config's directory.")
            .default(S(".")),
        Field::new(
            "git",
            &Ty::Text(&super::rules::GIT_URL),
            "Git URL of the source; when set, `ref` is resolved to a commit and checked out into rivetctl's cache.",
        ),
        Field::new("ref", &Ty::Text(&super::rules::GIT_REF), "Branch, tag or commit of `git`.").default(S("main")),
        Field::new(
            "git_timeout",
            &DURATION,
            "How long one git command (clone, fetch, rev-parse, archive, status) may run before it is stopped.",
        )
        .default(S("10m")),
        Field::new("dockerfiles", &Ty::Object(&DOCKERFILES), "Dockerfile locations per image."),
        Field::new("build_args", &STR_MAP, "Extra build arguments for every image (part of the content hash)."),
    ],
};

const NODE: Object = Object {
    unknown: Unknown::Warn("Unknown key \"{key}\" in \"{path}\""),
    fields: &[
        Field::new("name", &NAME, "Node name (unique).").required().missing("Node requires a string \"name\"").invalid("Node requires a string \"name\""),
        Field::new("role", &Ty::Enum(ROLES), "What runs on this node.").required().missing("Node role must be one of: datahub, agents, both").invalid("Node role must be one of: datahub, agents, both"),
        Field::new("host", &ENDPOINT, "How to reach the node's Docker Engine: `local`, `unix:///path`, `tcp://host:port` or `ssh://[user@]host[:port]` (without `user@`, the local user, as OpenSSH).").default(S("local")),
        Field::new("agents", &STR_LIST, "Agent ids that run on this node. Agents not listed anywhere run on the single agents node without a list."),
        Field::new("address", &HOST, "Address other nodes use to reach this node (the datahub's published port). Default: the host of `host`."),
        Field::new("tls", &Ty::Object(&ENGINE_TLS), "rivetctl: TLS with a client certificate for a `tcp://` `host` (required for `tcp://` unless `insecure`)."),
        Field::new("insecure", &BOOL, "rivetctl: allow plain HTTP to a `tcp://` `host` without TLS. Anyone on the path can then run containers as root on the node; every run warns.").default(B(false)),
        Field::new("images", &Ty::Enum(IMAGE_DELIVERY), "rivetctl: how the node gets images built once for `update`: `ship` sends them from this machine's engine over the node's connection; `pull` makes the node's engine pull them by digest from `deployment.image.registry` (pushed once from here).").default(S("ship")),
    ],
};

const RESOURCE_LIMITS: Object = Object {
    unknown: Unknown::Warn("Unknown key \"{key}\" in \"{path}\""),
    fields: &[
        Field::new("memory", &SIZE, "Memory limit, such as `512m` or `2Gi`."),
        Field::new("cpus", &Ty::Number { min: 0.01, max: 1024.0 }, "CPU limit in cores, such as `1.5`."),
        Field::new("pids", &Ty::Int { min: 16, max: 1_000_000 }, "Maximum number of processes."),
    ],
};

const RESOURCES: Object = Object {
    unknown: Unknown::Warn("Unknown key \"{key}\" in \"{path}\""),
    fields: &[
        Field::new(
            "agent",
            &Ty::Object(&RESOURCE_LIMITS),
            "Limits of each agent container (defaults: 1g, 1.0 CPU, 512 pids).",
        ),
        Field::new(
            "datahub",
            &Ty::Object(&RESOURCE_LIMITS),
            "Limits of the datahub container (defaults: 2g, 2.0 CPU, 1024 pids).",
        ),
    ],
};

const AGENT_DEPLOYMENT: Object = Object {
    unknown: Unknown::Warn("Unknown key \"{key}\" in \"{path}\""),
    fields: &[
        Field::new("env", &ENV_NAME_MAP, "Extra environment of this agent's container (overrides `deployment.env`)."),
        Field::new(
            "resources",
            &Ty::Object(&RESOURCE_LIMITS),
            "Limits of this agent's container (override `deployment.resources.agent`).",
        ),
        Field::new(
            "node",
            &NAME,
            "Node this agent runs on (alternative to listing it in `deployment.nodes[].agents`).",
        ),
    ],
};

const HEALTH: Object = Object {
    unknown: Unknown::Warn("Unknown key \"{key}\" in \"{path}\""),
    fields: &[
        Field::new("port", &PORT1, "Agent health port (`RIVETOS_HEALTH_PORT`).").default(I(3100)),
        Field::new("live_path", &URL_PATH, "Liveness endpoint (200 when alive).").default(S("/health/live")),
        Field::new("path", &URL_PATH, "Health endpoint reporting `status` and `version`.").default(S("/health")),
        Field::new("interval", &DURATION, "Interval of the container health check.").default(S("5s")),
        Field::new("timeout", &DURATION, "Timeout of one health check.").default(S("3s")),
        Field::new("retries", &Ty::Int { min: 1, max: 100 }, "Failed checks before a container is unhealthy.")
            .default(I(3)),
        Field::new("start_period", &DURATION, "Grace period after start during which failures do not count.")
            .default(S("30s")),
        Field::new("deadline", &DURATION, "How long `infra up` waits for a container to become healthy.")
            .default(S("3m")),
    ],
};

const UPDATE: Object = Object {
    unknown: Unknown::Warn("Unknown key \"{key}\" in \"{path}\""),
    fields: &[
        Field::new(
            "max_parallel",
            &PARALLEL,
            "Agents updated at once: a number, or a percentage of the agents such as `25%`.",
        )
        .default(S("1")),
        Field::new("canary", &Ty::Int { min: 0, max: 1000 }, "Agents in the first batch (0: no canary batch).")
            .default(I(1)),
        Field::new("approve", &BOOL, "Pause after the canary batch until `rivetctl update --resume --approve`.")
            .default(B(false)),
        Field::new("min_healthy_time", &DURATION, "How long an instance must stay healthy to pass its gate.")
            .default(S("10s")),
        Field::new("healthy_deadline", &DURATION, "How long an instance may take to pass its gate.").default(S("5m")),
        Field::new("progress_deadline", &DURATION, "How long the whole rollout may take.").default(S("30m")),
        Field::new("stop_grace_period", &DURATION, "Time between SIGTERM and SIGKILL when stopping an agent.")
            .default(S("30s")),
        Field::new(
            "probe_interval",
            &DURATION,
            "Least time between two probes of the health gate (rivetctl's own; not `deployment.health.interval`).",
        )
        .default(S("50ms")),
        Field::new("probe_timeout", &DURATION, "How long one probe of the health gate may wait for an answer.")
            .default(S("2s")),
        Field::new(
            "failure_action",
            &Ty::Enum(&["rollback", "pause", "continue"]),
            "What to do when an instance fails its gate.",
        )
        .default(S("rollback")),
        Field::new(
            "max_failure_ratio",
            &Ty::Number { min: 0.0, max: 1.0 },
            "Fraction of instances that may fail before `failure_action` applies.",
        )
        .default(N(0.0)),
        Field::new(
            "keep_images",
            &Ty::Int { min: 1, max: 50 },
            "Previous revisions' images kept on each node for rollback.",
        )
        .default(I(3)),
    ],
};

const APPLY: Object = Object {
    unknown: Unknown::Warn("Unknown key \"{key}\" in \"{path}\""),
    fields: &[Field::new(
        "max_parallel",
        &Ty::Int { min: 1, max: 1000 },
        "Plan steps `infra up` and `infra destroy` run at once within a wave (creating, removing, waiting for health).",
    )
    .default(I(16))],
};

const SSH: Object = Object {
    unknown: Unknown::Warn("Unknown key \"{key}\" in \"{path}\""),
    fields: &[
        Field::new("known_hosts", &STR, "known_hosts file that host keys are checked against.")
            .default(S("~/.ssh/known_hosts")),
        Field::new("identity_file", &STR, "Private key file; when unset, keys from the SSH agent (`SSH_AUTH_SOCK`)."),
        Field::new("connect_timeout", &DURATION, "Timeout of connecting and authenticating.").default(S("10s")),
        Field::new("command_timeout", &DURATION, "Timeout of one remote command.").default(S("10m")),
    ],
};

const DEPLOYMENT: Object = Object {
    unknown: Unknown::Warn("Unknown deployment key \"{key}\""),
    fields: &[
        Field::new("target", &Ty::Enum(TARGETS), "Where the fleet runs.")
            .required()
            .missing(
                "Missing required field \"deployment.target\" — must be one of: docker, proxmox, kubernetes, manual",
            )
            .invalid("Invalid deployment target \"{value}\" — must be one of: docker, proxmox, kubernetes, manual"),
        Field::new(
            "name",
            &NAME,
            "rivetctl: the deployment's identity (ownership labels, locks, journals). Default: `docker.project_name`.",
        ),
        Field::new("datahub", &Ty::Object(&DATAHUB), "The datahub: PostgreSQL + pgvector and the shared directory."),
        Field::new("image", &Ty::Object(&IMAGE), "Container images."),
        Field::new("docker", &Ty::Object(&DOCKER), "Docker target settings."),
        Field::new("proxmox", &Ty::Object(&PROXMOX), "Proxmox VE target settings."),
        Field::new("kubernetes", &Ty::Object(&KUBERNETES), "Kubernetes target settings."),
        Field::new("source", &Ty::Object(&SOURCE), "rivetctl: where images are built from."),
        Field::new(
            "nodes",
            &Ty::List(&Ty::Object(&NODE)),
            "rivetctl: the mesh nodes of a Docker deployment. Default: one node, `local`, running everything.",
        ),
        Field::new("resources", &Ty::Object(&RESOURCES), "rivetctl: container limits."),
        Field::new("env", &ENV_NAME_MAP, "rivetctl: extra environment for every agent container."),
        Field::new(
            "agents",
            &Ty::Map(&Ty::Object(&AGENT_DEPLOYMENT)),
            "rivetctl: per-agent container settings, keyed by the ids in `agents:`.",
        ),
        Field::new("health", &Ty::Object(&HEALTH), "rivetctl: agent health checks."),
        Field::new("update", &Ty::Object(&UPDATE), "rivetctl: rollout policy of `rivetctl update`."),
        Field::new("apply", &Ty::Object(&APPLY), "rivetctl: how `infra up` and `infra destroy` execute a plan."),
        Field::new("ssh", &Ty::Object(&SSH), "rivetctl: SSH connections to nodes."),
    ],
};

const AGENT: Object = Object {
    unknown: Unknown::Keep,
    fields: &[
        Field::new("provider", &STR, "LLM provider id."),
        Field::new("model", &STR, "Model name."),
        Field::new("default_thinking", &ANY, "Default thinking level."),
        Field::new("local", &BOOL, "Runs against a local model."),
        Field::new("tools", &ANY, "Tools the agent may use."),
    ],
};

const DISCOVERY: Object = Object {
    unknown: Unknown::Warn("Unknown key \"{key}\" in \"{path}\""),
    fields: &[
        Field::new("mode", &Ty::Enum(&["seed", "mdns", "static"]), "How nodes find each other."),
        Field::new("seed_host", &HOST, "Seed node address (mode `seed`)."),
        Field::new("seed_port", &PORT1, "Seed node port.").default(I(3100)),
    ],
};

const PEER: Object = Object {
    unknown: Unknown::Warn("Unknown key \"{key}\" in \"{path}\""),
    fields: &[
        Field::new("name", &STR, "Peer name."),
        Field::new("host", &HOST, "Peer address."),
        Field::new("port", &PORT1, "Peer port.").default(I(3100)),
    ],
};

const MESH: Object = Object {
    unknown: Unknown::Warn("Unknown key \"{key}\" in \"{path}\""),
    fields: &[
        Field::new("enabled", &BOOL, "Join the mesh.").default(B(false)),
        Field::new("node_name", &STR, "This node's name in the mesh."),
        Field::new("advertise_host", &HOST, "Address other nodes reach this one at (used in ssh commands).")
            .hint("use a plain host name or IP address"),
        Field::new("tls", &BOOL, "mTLS on the agent channel.").default(B(false)),
        Field::new("agent_channel_port", &PORT1, "Agent channel port.").default(I(3000)),
        Field::new("storage_dir", &ABS_PATH, "Shared storage directory.").default(S("/rivet-shared")),
        Field::new("discovery", &Ty::Object(&DISCOVERY), "Node discovery."),
        Field::new("heartbeat_interval_ms", &Ty::Int { min: 100, max: 86_400_000 }, "Heartbeat interval.")
            .default(I(30_000)),
        Field::new(
            "stale_threshold_ms",
            &Ty::Int { min: 100, max: 86_400_000 },
            "After how long without heartbeat a node is offline.",
        )
        .default(I(90_000)),
        Field::new("peers", &Ty::List(&Ty::Object(&PEER)), "Static peers."),
    ],
};

/// Top-level sections rivetctl reads; every other section belongs to the runtime.
pub const ROOT: Object = Object {
    unknown: Unknown::Keep,
    fields: &[
        Field::new("deployment", &Ty::Object(&DEPLOYMENT), "How and where the fleet is deployed.").required().missing(
            "Missing required field \"deployment.target\" — must be one of: docker, proxmox, kubernetes, manual",
        ),
        Field::new("agents", &Ty::Map(&Ty::Object(&AGENT)), "Agents: one container or process per id."),
        Field::new("mesh", &Ty::Object(&MESH), "Mesh networking between nodes."),
    ],
};

/// Sections of the runtime that rivetctl keeps without checking (used to tell a typo of a
/// rivetctl section from a runtime section).
pub const RUNTIME_SECTIONS: &[&str] =
    &["runtime", "providers", "channels", "memory", "tools", "skills", "logging", "plugins", "workspace"];

/// Keys of the deployment object (used in tests and docs checks).
pub fn deployment_fields() -> &'static [Field] {
    DEPLOYMENT.fields
}
