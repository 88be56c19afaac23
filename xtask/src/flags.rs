//! The command line, parsed with clap: raw flags only; each command validates and runs them.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// `--connect-timeout`: seconds, as the library parses them.
fn timeout(s: &str) -> Result<Duration, String> {
    e2e_migrations::db::parse_timeout(s).map_err(|e| e.to_string())
}

/// End-to-end test databases: migrations, partitions, a local server or a Kind cluster.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", version, about)]
pub struct Xtask {
    /// Print errors only: no progress, notes, warnings or logs on stderr (even with E2E_LOG);
    /// stdout's data is unchanged. Before or after the command.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// The command.
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Start (or reuse) a database, apply migration sets, roll partitions, print how to connect.
    E2eSetup(Setup),
    /// Remove what e2e-setup made, and nothing else.
    E2eTeardown(Teardown),
    /// Apply, inspect or revert migrations on a database.
    Migrate(Migrate),
    /// Roll, list or prune the declared partitions.
    Partitions(Partitions),
    /// Open psql on this checkout's database, whatever the backend (through an in-process
    /// port-forward for a cluster): `cargo xtask psql [-- psql arguments]`.
    Psql(Psql),
    /// Hold a port-forward to this checkout's database (a cluster without a host port) and print
    /// DATABASE_URL on stdout until Ctrl-C, for tools other than psql.
    PortForward(PortForward),
    /// Show this checkout's setup at a glance: backend, server, sets, migrations, partitions,
    /// test databases. Starts nothing, changes nothing.
    Status(Status),
    /// Measure against the old way (psql per file, pg_partman, ...) side by side.
    Bench(Bench),
    /// Say whether this machine can run each backend, and what to install where it cannot.
    Doctor(Doctor),
    /// Print a shell completion script for `cargo xtask` on stdout.
    Completions(Completions),
}

/// Where the database comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// Kind when kind and a container engine are present, else local.
    Auto,
    /// A throwaway PostgreSQL from this machine's server binaries.
    Local,
    /// A Kind cluster with PostgreSQL deployed in it.
    Kind,
    /// An existing Kubernetes cluster (--context), in its own namespace.
    Kube,
    /// An existing server given by --database-url / DATABASE_URL.
    Url,
}

/// Output format for commands that report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum Output {
    /// Human-readable text.
    #[default]
    Text,
    /// JSON on stdout.
    Json,
}

/// How `--print-env` prints the connection settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EnvFormat {
    /// `KEY=value` lines, unquoted, as nextest's `$NEXTEST_ENV` and env files read them (`eval`
    /// of them neither exports nor quotes: use `shell` for a shell).
    Plain,
    /// `export KEY=value` lines, single-quoted where needed, for a POSIX shell's `eval`.
    Shell,
}

/// Where the migrations are and which sets to use.
#[derive(Debug, Clone, Args)]
pub struct SetArgs {
    /// Migration sets to apply, comma-separated (see migrations/sets.toml); default: all.
    #[arg(long, value_name = "SET,...")]
    pub sets: Option<String>,
    /// The goose migrations folder, relative to the workspace root [default: its migrations/].
    #[arg(long, env = "E2E_MIGRATIONS_DIR", value_name = "DIR")]
    pub migrations_dir: Option<PathBuf>,
}

/// Setup flags.
#[derive(Debug, Clone, Args)]
pub struct Setup {
    /// Where the database comes from.
    #[arg(long, value_enum, env = "E2E_BACKEND", default_value_t = Backend::Auto)]
    pub backend: Backend,
    /// Sets and folder.
    #[command(flatten)]
    pub sets: SetArgs,
    /// An existing server (implies --backend url when given).
    #[arg(long, env = "DATABASE_URL", value_name = "URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Seconds a connection may take to be ready (TCP, startup, authentication).
    #[arg(long, env = "E2E_CONNECT_TIMEOUT", default_value = "10", value_name = "SECONDS", value_parser = timeout)]
    pub connect_timeout: Duration,
    /// Print the connection settings on stdout and nothing else there: DATABASE_URL (local,
    /// kind, url), KUBECONFIG, E2E_KUBE_CONTEXT, E2E_NAMESPACE, E2E_RUN_ID (kind, kube).
    /// `--print-env` prints plain KEY=VALUE lines (for nextest's $NEXTEST_ENV and env files);
    /// `--print-env=shell` prints `export KEY=value` lines (quoted where needed), for
    /// `eval "$(cargo xtask e2e-setup --print-env=shell)"`. A kube setup has no host port, so no
    /// DATABASE_URL: test crates reach it through this checkout's state; use `cargo xtask psql`
    /// or `cargo xtask port-forward` from a shell.
    #[arg(
        long,
        value_enum,
        value_name = "FORMAT",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "plain"
    )]
    pub print_env: Option<EnvFormat>,
    /// Act as on this date (UTC) when rolling partitions.
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub now: Option<String>,
    /// Apply even if applied migrations changed since (recording their new checksums).
    #[arg(long)]
    pub accept_drift: bool,
    /// Seconds to wait for another runner's migration lock.
    #[arg(long, default_value_t = 120, value_name = "SECONDS")]
    pub lock_timeout: u64,
    /// Kind/kube: print every command and manifest in order and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Kind: delete and create the cluster even if a healthy one exists.
    #[arg(long)]
    pub recreate: bool,
    /// Cluster flags (kind, kube).
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// Teardown flags.
#[derive(Debug, Clone, Args)]
pub struct Teardown {
    /// What to tear down [default: whatever setup made].
    #[arg(long, value_enum)]
    pub backend: Option<Backend>,
    /// Kind/kube: keep what setup made, cluster and namespace (also KEEP_CLUSTER=true).
    #[arg(long, env = "KEEP_CLUSTER")]
    pub keep: bool,
    /// Kind/kube: print every command in order and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Kube: the run to remove [default: the one setup recorded] (setup prints it as E2E_RUN_ID).
    #[arg(long, value_name = "RUN_ID")]
    pub run_id: Option<String>,
    /// Kube: instead, remove every setup on the cluster whose last setup is at least AGE ago
    /// (e.g. 2h, 90m, 1d), in --namespace N or --all-namespaces, as a CI cleanup job would.
    #[arg(long, value_name = "AGE", conflicts_with = "run_id")]
    pub stale: Option<String>,
    /// Kube, with --stale: look in every namespace (needs the ClusterRole).
    #[arg(long, requires = "stale")]
    pub all_namespaces: bool,
    /// Cluster flags (kind, kube).
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// Which cluster and namespace (kind, kube); shared by setup and teardown.
#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    /// Kube: the kubeconfig context of the existing cluster.
    #[arg(long, value_name = "CONTEXT")]
    pub context: Option<String>,
    /// Kube: the namespace setup deploys into (and, unless --existing-namespace, creates and owns).
    #[arg(long, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// Kube: --namespace was made by someone else (also `[kube] existing_namespace` in e2e.toml):
    /// setup never creates or deletes it and owns only the objects it makes there.
    #[arg(long)]
    pub existing_namespace: bool,
    /// Kind/kube: the settings file, relative to the workspace root [default: the one the
    /// previous setup read, else e2e.toml at the root, if present].
    #[arg(long, env = "E2E_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// Where `migrate` and `partitions` connect.
#[derive(Debug, Clone, Args)]
pub struct DbArgs {
    /// The server [default: the one e2e-setup made, else the local default].
    #[arg(long, env = "DATABASE_URL", value_name = "URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Seconds a connection may take to be ready (TCP, startup, authentication).
    #[arg(long, env = "E2E_CONNECT_TIMEOUT", default_value = "10", value_name = "SECONDS", value_parser = timeout)]
    pub connect_timeout: Duration,
}

/// `migrate` flags.
#[derive(Debug, Clone, Args)]
pub struct Migrate {
    /// What to do.
    #[command(subcommand)]
    pub action: MigrateAction,
}

/// `migrate` actions.
#[derive(Debug, Clone, Subcommand)]
pub enum MigrateAction {
    /// Apply pending migrations of the sets.
    Up(MigrateUp),
    /// Show applied, pending, drifted and unknown versions.
    Status(MigrateRead),
    /// Print the migrations `up` would apply, in order, with their SQL; changes nothing.
    Plan(MigrateRead),
    /// Revert the newest applied migration of the sets (or all above --to).
    Down(MigrateDown),
    /// Write a new migration file (the next version) and add it to a set in sets.toml.
    New(MigrateNew),
}

/// `migrate up` flags.
#[derive(Debug, Clone, Args)]
pub struct MigrateUp {
    /// Sets and folder.
    #[command(flatten)]
    pub sets: SetArgs,
    /// Target server.
    #[command(flatten)]
    pub db: DbArgs,
    /// Apply even if applied migrations changed since.
    #[arg(long)]
    pub accept_drift: bool,
    /// Seconds to wait for another runner's migration lock.
    #[arg(long, default_value_t = 120, value_name = "SECONDS")]
    pub lock_timeout: u64,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
}

/// `migrate status` / `plan` flags.
#[derive(Debug, Clone, Args)]
pub struct MigrateRead {
    /// Sets and folder.
    #[command(flatten)]
    pub sets: SetArgs,
    /// Target server.
    #[command(flatten)]
    pub db: DbArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
}

/// `migrate down` flags.
#[derive(Debug, Clone, Args)]
pub struct MigrateDown {
    /// Sets and folder.
    #[command(flatten)]
    pub sets: SetArgs,
    /// Target server.
    #[command(flatten)]
    pub db: DbArgs,
    /// Revert every applied migration of the sets above this version (exclusive); 0 for all.
    #[arg(long, value_name = "VERSION")]
    pub to: Option<i64>,
    /// Seconds to wait for another runner's migration lock.
    #[arg(long, default_value_t = 120, value_name = "SECONDS")]
    pub lock_timeout: u64,
}

/// `partitions` flags.
#[derive(Debug, Clone, Args)]
pub struct Partitions {
    /// What to do.
    #[command(subcommand)]
    pub action: PartitionsAction,
}

/// `partitions` actions.
#[derive(Debug, Clone, Subcommand)]
pub enum PartitionsAction {
    /// Create the partitions wanted as of --now, moving rows waiting in the default partition
    /// into them (as maintenance: no trigger fires, rows stay as they were), and apply retention
    /// where a spec asks for it.
    Roll(PartitionsChange),
    /// Show each partition with its bounds and row count, and what a roll would add.
    List(PartitionsArgs),
    /// Apply retention only: detach or drop partitions older than each spec keeps.
    Prune(PartitionsChange),
}

/// Flags of every `partitions` action.
#[derive(Debug, Clone, Args)]
pub struct PartitionsArgs {
    /// Sets and folder.
    #[command(flatten)]
    pub sets: SetArgs,
    /// Target server.
    #[command(flatten)]
    pub db: DbArgs,
    /// Act as on this date (UTC) [default: today].
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub now: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
}

/// Flags of `partitions roll` and `partitions prune`.
#[derive(Debug, Clone, Args)]
pub struct PartitionsChange {
    /// Sets, folder, server, date, output.
    #[command(flatten)]
    pub common: PartitionsArgs,
    /// Seconds to wait for another runner's migration lock.
    #[arg(long, default_value_t = 120, value_name = "SECONDS")]
    pub lock_timeout: u64,
    /// Roll: create partitions but leave retention alone.
    #[arg(long)]
    pub no_prune: bool,
}

/// `psql` flags.
#[derive(Debug, Clone, Args)]
pub struct Psql {
    /// The server [default: this checkout's setup].
    #[command(flatten)]
    pub db: DbArgs,
    /// Arguments for psql, after `--` (e.g. `-- -c 'select 1'`).
    #[arg(last = true, value_name = "PSQL ARGS")]
    pub args: Vec<String>,
}

/// `port-forward` flags.
#[derive(Debug, Clone, Args)]
pub struct PortForward {
    /// The local port on 127.0.0.1 (a cluster's forward) [default: a free one].
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,
    /// Seconds a connection may take to be ready.
    #[arg(long, env = "E2E_CONNECT_TIMEOUT", default_value = "10", value_name = "SECONDS", value_parser = timeout)]
    pub connect_timeout: Duration,
}

/// `status` flags.
#[derive(Debug, Clone, Args)]
pub struct Status {
    /// The goose migrations folder, relative to the workspace root [default: its migrations/].
    #[arg(long, env = "E2E_MIGRATIONS_DIR", value_name = "DIR")]
    pub migrations_dir: Option<PathBuf>,
    /// Judge the partitions as on this date (UTC) [default: today].
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub now: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
}

/// `bench` flags.
#[derive(Debug, Clone, Args)]
pub struct Bench {
    /// Output format: a table, or JSON {"cases": [...]}.
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
    /// Only these cases (comma-separated).
    #[arg(long, value_name = "CASE,...")]
    pub cases: Option<String>,
    /// Repetitions per measurement (the median is reported).
    #[arg(long, default_value_t = 7)]
    pub runs: usize,
}

/// `migrate new` flags.
#[derive(Debug, Clone, Args)]
pub struct MigrateNew {
    /// What the migration does, as an identifier (letters, digits, `_`): the file is `NNN_<name>.sql`.
    pub name: String,
    /// The set in sets.toml the file joins (required when the folder has a sets.toml).
    #[arg(long, value_name = "SET")]
    pub set: Option<String>,
    /// Use this version instead of the highest one plus one (e.g. to match production's numbering).
    #[arg(long, value_name = "VERSION")]
    pub version: Option<i64>,
    /// The goose migrations folder, relative to the workspace root [default: its migrations/].
    #[arg(long, env = "E2E_MIGRATIONS_DIR", value_name = "DIR")]
    pub migrations_dir: Option<PathBuf>,
}

/// `doctor` flags.
#[derive(Debug, Clone, Args)]
pub struct Doctor {
    /// Output format: a report, or JSON.
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
}

/// `completions` flags.
#[derive(Debug, Clone, Args)]
pub struct Completions {
    /// The shell to print the script for.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// A shell that `completions` writes a script for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    /// Bash (3.2 and later).
    Bash,
    /// Zsh.
    Zsh,
    /// Fish.
    Fish,
}
