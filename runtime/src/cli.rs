//! What the user typed: the command line as clap parses it. No I/O here; `main` turns it
//! into work.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Deploys and updates RivetOS fleets: Docker, Proxmox LXC or Kubernetes, built from source,
/// rolled out across the mesh with health checks.
#[derive(Debug, Parser)]
#[command(name = "rivetctl", version, about, long_about = None, propagate_version = true)]
#[command(
    after_help = "Exit codes: 0 ok, 1 error, 2 changes present (only with --detailed-exitcode), 3 rollout failed, 130 interrupted (Ctrl-C/SIGTERM).\nDocs: docs/ in the repository; `rivetctl config schema` prints the config's JSON Schema."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// The config file.
    #[arg(short, long, global = true, env = "RIVET_CONFIG", default_value = "rivet.config.yaml", value_name = "FILE")]
    pub config: PathBuf,
    /// Output format of data on stdout (JSON Lines for streaming commands).
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// When to use colours (NO_COLOR is honoured with `auto`).
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
    /// Print only errors and data.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Print more (repeat for more detail).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Kubernetes: the kubeconfig context to use (overrides deployment.kubernetes.context;
    /// default: the kubeconfig's current context, else the in-cluster service account).
    #[arg(long, global = true, env = "RIVET_KUBE_CONTEXT", value_name = "NAME")]
    pub context: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Plan, apply and remove the deployment's infrastructure.
    #[command(subcommand)]
    Infra(InfraCommand),
    /// Build the datahub and agent images from source; print their content-addressed tags.
    Build,
    /// Roll a source update across one node (--node) or every node (--mesh): build once,
    /// ship, update in batches behind health gates, roll back on failure.
    Update(UpdateArgs),
    /// Return agents to the previous revision (or --to one) kept on each node.
    Rollback(RollbackArgs),
    /// Per node and service: image, revision, state, health, uptime, drift.
    Status,
    /// Check the config, the source, engine connections and what builds need.
    Doctor,
    /// Show or release the deployment's lock (kept on the target's primary node).
    #[command(subcommand)]
    Lock(LockCommand),
    /// Check the config, or print its JSON Schema.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print shell completions.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
pub enum InfraCommand {
    /// Show what `infra up` would change; changes nothing, builds nothing.
    Preview(PreviewArgs),
    /// Build what the plan needs, apply it, wait until everything is healthy.
    ///
    /// Ctrl-C (or SIGTERM) stops after the steps in flight and exits 130; a second Ctrl-C
    /// aborts at once.
    Up(UpArgs),
    /// Remove the deployment's containers and networks; keep data unless --volumes.
    ///
    /// Removes everything it can: what the engine refuses to remove is listed at the end
    /// with the reason and a remedy (exit 1). Ctrl-C stops after the removals in flight.
    Destroy(DestroyArgs),
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Confirm destructive steps (pruning agents, replacing the datahub) without asking.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Do not build images; use the ones already on the engines.
    #[arg(long)]
    pub no_build: bool,
    #[command(flatten)]
    pub kubernetes: KubernetesArgs,
}

/// What only the Kubernetes target reads.
#[derive(Debug, Default, Clone, Args)]
pub struct KubernetesArgs {
    /// Kubernetes: take over fields another field manager owns (server-side apply
    /// conflicts); without it, a conflict stops the apply and lists field and manager.
    #[arg(long)]
    pub force_conflicts: bool,
    /// Kubernetes: leave out objects the server serves no API version for (such as
    /// PodDisruptionBudgets on a server without policy/v1 or policy/v1beta1).
    #[arg(long)]
    pub skip_unserved: bool,
    /// Kubernetes: do not push built images to deployment.image.registry; manifests name
    /// them by their local content-hash tag (a cluster that shares this Docker Engine).
    #[arg(long)]
    pub no_push: bool,
}

#[derive(Debug, Args)]
pub struct DestroyArgs {
    /// Also delete data volumes (the datahub's database and the shared directory).
    #[arg(long)]
    pub volumes: bool,
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    pub yes: bool,
}

#[derive(Debug, Default, Args)]
pub struct UpdateArgs {
    /// Update every node of the mesh.
    #[arg(long, conflicts_with = "node")]
    pub mesh: bool,
    /// Update these nodes only (repeatable).
    #[arg(long, value_name = "NAME")]
    pub node: Vec<String>,
    /// RivetOS's mesh.json: skip nodes it marks offline, not deployable, or not Linux.
    #[arg(long, value_name = "FILE")]
    pub mesh_file: Option<PathBuf>,
    /// Print the batches, their order and how many agents stay up; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Continue the unfinished rollout in the journal.
    #[arg(long, conflicts_with_all = ["dry_run", "abandon"])]
    pub resume: bool,
    /// Drop the unfinished rollout (containers stay as they are).
    #[arg(long, conflicts_with = "dry_run")]
    pub abandon: bool,
    /// Approve the canary batch (with deployment.update.approve).
    #[arg(long)]
    pub approve: bool,
    /// Agents updated at once: a number or a percentage (overrides the config).
    #[arg(long, value_name = "N|N%")]
    pub max_parallel: Option<String>,
    /// Agents in the first batch; 0 for no canary (overrides the config).
    #[arg(long, value_name = "N")]
    pub canary: Option<u32>,
    /// What a failed health gate does (overrides the config).
    #[arg(long, value_enum)]
    pub failure_action: Option<FailureActionArg>,
    /// Kubernetes: do not push the built images; manifests name them by their local tag.
    #[arg(long)]
    pub no_push: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FailureActionArg {
    Rollback,
    Pause,
    Continue,
}

impl From<FailureActionArg> for orchestrator::config::model::FailureAction {
    fn from(value: FailureActionArg) -> Self {
        match value {
            FailureActionArg::Rollback => Self::Rollback,
            FailureActionArg::Pause => Self::Pause,
            FailureActionArg::Continue => Self::Continue,
        }
    }
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The revision (commit prefix) or image tag to return to; default: the image that was
    /// current before the running one and was never rejected. May name a rejected one.
    #[arg(long, value_name = "REV")]
    pub to: Option<String>,
    /// List, per node, the images to return to (current, rejected, the default target);
    /// change nothing.
    #[arg(long, conflicts_with = "to")]
    pub list: bool,
    /// Roll back these nodes only (repeatable); default: every node.
    #[arg(long, value_name = "NAME")]
    pub node: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum LockCommand {
    /// Who holds the lock (host, pid, command), for how long, and when it lapses.
    Status,
    /// Remove a lock whose holder is gone (lapsed, or its process on this host ended).
    Release {
        /// Remove it even if its holder may still run (it then stops at its next step).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Args)]
pub struct PreviewArgs {
    /// Also write the rendered artifacts (compose file, manifests, LXC/systemd files) here.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Exit 0 when there are no changes, 2 when there are, 1 on error.
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// Plan against an empty target instead of reading the Docker Engine or the cluster.
    #[arg(long)]
    pub offline: bool,
    #[command(flatten)]
    pub kubernetes: KubernetesArgs,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check the config and its .env; print every problem with its position.
    Validate,
    /// Print the JSON Schema of rivet.config.yaml (for editors).
    Schema,
}
