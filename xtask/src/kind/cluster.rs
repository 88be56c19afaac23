//! The Kind cluster: availability probe, reuse and ownership decisions (pure), and the `kind`
//! and container-engine commands (xshell, arguments never through a shell).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use xshell::{cmd, Cmd, Shell};

use super::dry_run::{self, Engine};
use super::share::{decide_shared_teardown, guard_recreate, Claim, SharedTeardown};
use crate::progress;

/// What an engine's `info` command said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EngineAnswer {
    /// The binary is not on PATH.
    Missing,
    /// The daemon (or machine) answered.
    Running,
    /// The command failed: what it said.
    NotRunning(String),
    /// No answer within the probe's time limit.
    TimedOut,
}

/// What the machine has: the facts the availability decision is made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Probe {
    /// `kind` on PATH.
    pub(crate) kind: bool,
    /// `KIND_EXPERIMENTAL_PROVIDER=podman` is set.
    pub(crate) podman_requested: bool,
    /// `docker info`.
    pub(crate) docker: EngineAnswer,
    /// `podman info`.
    pub(crate) podman: EngineAnswer,
}

const INSTALL_KIND: &str = "install kind (https://kind.sigs.k8s.io/docs/user/quick-start/#installation; e.g. `go install sigs.k8s.io/kind@v0.27.0`)";

/// What a user who asked for kind, or asks whether it can run, may do instead of the reason
/// [`availability`] gives (auto, which falls back to the local backend, says the reason alone).
pub(crate) fn or_local(why: &str) -> String {
    format!("{why}, or use --backend local")
}

/// The engine kind will use, or why kind cannot run here (pure). The messages say what to
/// install or start ([`or_local`] adds that `--backend local` needs neither).
pub(crate) fn availability(p: &Probe) -> std::result::Result<Engine, String> {
    if !p.kind {
        return Err(format!("`kind` is not on PATH: {INSTALL_KIND}"));
    }
    let engines: &[(Engine, &EngineAnswer)] = if p.podman_requested {
        &[(Engine::Podman, &p.podman)]
    } else {
        &[(Engine::Docker, &p.docker), (Engine::Podman, &p.podman)]
    };
    let mut problems = Vec::new();
    for (engine, answer) in engines {
        let name = engine.program();
        match answer {
            EngineAnswer::Running => return Ok(*engine),
            EngineAnswer::Missing => {}
            EngineAnswer::NotRunning(said) => problems.push(format!(
                "{name} is installed but not running (`{name} info`: {}): start it ({})",
                said.lines().find(|l| !l.trim().is_empty()).unwrap_or("failed").trim(),
                start_hint(*engine)
            )),
            EngineAnswer::TimedOut => problems.push(format!(
                "{name} is installed but `{name} info` did not answer within {} s: start or restart it ({})",
                PROBE_TIMEOUT.as_secs(),
                start_hint(*engine)
            )),
        }
    }
    if problems.is_empty() {
        let which = if p.podman_requested { "podman (KIND_EXPERIMENTAL_PROVIDER=podman)" } else { "docker or podman" };
        return Err(format!("no container engine for kind: install {which} and start it"));
    }
    Err(problems.join("; "))
}

fn start_hint(engine: Engine) -> &'static str {
    match engine {
        Engine::Docker => "`sudo systemctl start docker`, or open Docker Desktop / colima",
        Engine::Podman => "`podman machine start` on macOS/Windows; on Linux check `podman info`",
    }
}

/// How long an engine's `info` may take before it counts as not answering.
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Probes this machine (a few seconds at most; the engines only when kind is there).
pub(crate) fn probe(sh: &Shell) -> Probe {
    let podman_requested = std::env::var("KIND_EXPERIMENTAL_PROVIDER").map(|v| v == "podman").unwrap_or(false);
    let kind = on_path("kind");
    let docker = if podman_requested || !kind { EngineAnswer::Missing } else { engine_answer(sh, Engine::Docker) };
    let podman = if docker == EngineAnswer::Running || !kind {
        EngineAnswer::Missing
    } else {
        engine_answer(sh, Engine::Podman)
    };
    Probe { kind, podman_requested, docker, podman }
}

/// Whether `program` is an executable file in a PATH folder.
pub(crate) fn on_path(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH")
        .map(|path| {
            std::env::split_paths(&path).any(|dir| {
                std::fs::metadata(dir.join(program))
                    .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                    .unwrap_or(false)
            })
        })
        .unwrap_or(false)
}

pub(crate) fn engine_answer(sh: &Shell, engine: Engine) -> EngineAnswer {
    let program = engine.program();
    if !on_path(program) {
        return EngineAnswer::Missing;
    }
    let format = "{{.ID}}";
    let mut command: Command = cmd!(sh, "{program} info --format {format}").into();
    command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    let Ok(mut child) = command.spawn() else {
        return EngineAnswer::Missing;
    };
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return EngineAnswer::Running,
            Ok(Some(_)) => {
                let mut said = String::new();
                if let Some(mut err) = child.stderr.take() {
                    use std::io::Read;
                    let _ = err.read_to_string(&mut said);
                }
                return EngineAnswer::NotRunning(said);
            }
            Ok(None) if start.elapsed() >= PROBE_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return EngineAnswer::TimedOut;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return EngineAnswer::NotRunning(e.to_string()),
        }
    }
}

/// What the cluster says about itself, when asked through the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Marker {
    /// The API answered; the control-plane node carries our owner label (and this config hash);
    /// `healthy` when the node is Ready.
    Ours { config_hash: Option<String>, healthy: bool },
    /// The API answered; the node has no owner label: someone else's cluster.
    Foreign,
    /// The API did not answer (a stopped or paused node, a busy machine, a broken cluster):
    /// what went wrong.
    Unreachable(String),
}

/// What a decision about the cluster is made from (plain data, gathered under the cluster's
/// machine-wide lock, see [`super::lock`]).
#[derive(Debug, Clone)]
pub(crate) struct Facts<'a> {
    /// The cluster's name.
    pub(crate) name: &'a str,
    /// `kind get clusters`.
    pub(crate) existing: &'a [String],
    /// What its API says of its node.
    pub(crate) marker: &'a Marker,
    /// The namespaces checkouts hold in it, when its API answered (`None`: not known).
    pub(crate) claims: Option<&'a [Claim]>,
    /// This checkout's tag.
    pub(crate) me: &'a str,
    /// This checkout's namespace.
    pub(crate) namespace: &'a str,
    /// This checkout's record says its setup created the cluster. Only for the messages:
    /// others may have joined since, so it never allows a delete.
    pub(crate) created_here: bool,
    /// The note of an interrupted create or delete of the cluster (who, when): it is half made
    /// and no checkout can have joined it (see [`super::lock`]).
    pub(crate) interrupted: Option<&'a str>,
    /// The container engine kind runs on (for the hints).
    pub(crate) engine: Engine,
}

impl Facts<'_> {
    fn exists(&self) -> bool {
        self.existing.iter().any(|c| c == self.name)
    }

    /// Where to look when the API does not answer, and how to delete the cluster by hand.
    fn unreachable_hints(&self) -> String {
        let (name, engine) = (self.name, self.engine.program());
        format!(
            "is its node running? `{engine} ps -a --filter label=io.x-k8s.kind.cluster={name}`; a stopped one starts \
             with `{engine} start {name}-control-plane`, a paused one with `{engine} unpause {name}-control-plane`"
        )
    }

    fn whose(&self) -> &'static str {
        if self.created_here {
            " (this checkout's setup created it, but other checkouts may have joined it since)"
        } else {
            ""
        }
    }
}

/// What to do with the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// No such cluster: create it.
    Create,
    /// Ours and healthy: reuse it.
    Reuse,
    /// Ours, no other checkout uses it, to be replaced: delete, then create (why).
    Recreate(String),
    /// Not ours, used by other checkouts, or cannot tell: change nothing (the error).
    Refuse(String),
}

/// Decides create / reuse / recreate / refuse (pure). A cluster is recreated only when its API
/// answers, shows our label and shows no other checkout's namespace, or when the note of an
/// interrupted create proves it half made; `recreate` is `--recreate`.
pub(crate) fn decide(f: &Facts<'_>, recreate: bool, want_hash: &str) -> Action {
    let name = f.name;
    if !f.exists() {
        return Action::Create;
    }
    let not_ours = |why: &str| {
        Action::Refuse(format!(
            "a Kind cluster named {name:?} exists and {why}; e2e-setup never changes or deletes a cluster it did not create: \
             choose another cluster.name in e2e.toml (--config), or delete it yourself (`kind delete cluster --name {name}`)"
        ))
    };
    // Replaced only when no other checkout's namespace is seen in it: an unanswered API shows none.
    let guarded = |why: String| match f.claims {
        Some(claims) => match guard_recreate(f.me, claims, &why) {
            Ok(()) => Action::Recreate(why),
            Err(e) => Action::Refuse(e),
        },
        None => Action::Recreate(why),
    };
    match f.marker {
        Marker::Foreign => {
            not_ours(&format!("its node lacks the label {}={}", super::config::OWNER_LABEL, super::config::OWNER_VALUE))
        }
        _ if f.interrupted.is_some() => guarded(format!(
            "an earlier create or delete of the cluster ({}) was interrupted: the cluster is half made or half deleted, \
             and no checkout has joined it",
            f.interrupted.unwrap_or_default()
        )),
        Marker::Unreachable(e) => Action::Refuse(format!(
            "Kind cluster {name:?} exists but its API server does not answer ({e}){}, so e2e-setup cannot check that it \
             made the cluster, that it is healthy, or which checkouts use it: it is neither reused nor recreated{}. \
             If the cluster is starting (after a restart of the machine or of {engine}), run setup again in a moment; {}. \
             To replace it, which deletes every checkout's database in it: `kind delete cluster --name {name}`, then \
             run setup again",
            f.whose(),
            if recreate { " (not even with --recreate)" } else { "" },
            f.unreachable_hints(),
            engine = f.engine.program(),
        )),
        Marker::Ours { .. } if f.claims.is_none() => Action::Refuse(format!(
            "the checkouts using Kind cluster {name:?} could not be listed: it is neither reused nor recreated"
        )),
        Marker::Ours { .. } if recreate => guarded("--recreate".to_string()),
        Marker::Ours { healthy: false, .. } => guarded("its node is not Ready".to_string()),
        Marker::Ours { config_hash, .. } if config_hash.as_deref() != Some(want_hash) => {
            guarded("the cluster config changed since it was created (e2e.toml)".to_string())
        }
        Marker::Ours { .. } => Action::Reuse,
    }
}

/// Whether this checkout's record says it created the cluster after `action` (pure): a create
/// or recreate now does; a reuse keeps what the record said of this cluster (`before`).
pub(crate) fn created_here(action: &Action, before: bool) -> bool {
    match action {
        Action::Create | Action::Recreate(_) => true,
        Action::Reuse | Action::Refuse(_) => before,
    }
}

/// What teardown does with the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TeardownAction {
    /// Nothing to do (why).
    Nothing(String),
    /// Change nothing (the error).
    Refuse(String),
    /// Delete this checkout's namespace and keep the cluster: these other checkouts use it.
    NamespaceOnly {
        /// Their tags.
        others: Vec<String>,
    },
    /// Delete this checkout's namespace, then the cluster: e2e-setup made it and no other
    /// checkout uses it (whichever checkout created it: the last one out deletes it).
    NamespaceAndCluster,
    /// Delete the remains of an interrupted create (why): nothing can be in them.
    Remains(String),
}

/// Decides what teardown does (pure). The cluster goes only when its API answers, shows our
/// label and no other checkout's namespace, or when the note of an interrupted create proves
/// it half made; a cluster whose API does not answer is never deleted.
pub(crate) fn decide_teardown(f: &Facts<'_>) -> TeardownAction {
    let name = f.name;
    if !f.exists() {
        return TeardownAction::Nothing(format!("no Kind cluster named {name:?}"));
    }
    match (f.marker, f.claims) {
        (Marker::Foreign, _) => TeardownAction::Refuse(format!(
            "Kind cluster {name:?} was not created by e2e-setup (no label {}): left alone",
            super::config::OWNER_LABEL
        )),
        (Marker::Ours { .. }, Some(claims)) => match decide_shared_teardown(f.me, claims) {
            SharedTeardown::NamespaceOnly { others } => TeardownAction::NamespaceOnly { others },
            SharedTeardown::NamespaceAndCluster => TeardownAction::NamespaceAndCluster,
        },
        (Marker::Unreachable(_), _) if f.interrupted.is_some() => TeardownAction::Remains(format!(
            "the remains of an interrupted create or delete of the cluster ({})",
            f.interrupted.unwrap_or_default()
        )),
        (Marker::Ours { .. }, None) => TeardownAction::Refuse(format!(
            "the checkouts using Kind cluster {name:?} could not be listed: nothing was deleted"
        )),
        (Marker::Unreachable(e), _) => TeardownAction::Refuse(format!(
            "Kind cluster {name:?} does not answer ({e}){}: this checkout's namespace {} cannot be deleted, and which \
             other checkouts use the cluster cannot be checked, so nothing was deleted and this checkout's record (if any) \
             is kept. Run `cargo xtask e2e-teardown` again once the cluster answers ({}). To delete the cluster for \
             every checkout that uses it: `kind delete cluster --name {name}`, then `cargo xtask e2e-teardown` \
             forgets this checkout's setup",
            f.whose(),
            f.namespace,
            f.unreachable_hints(),
        )),
    }
}

/// Where our files for cluster `name` go: `<state>/kind/`.
#[derive(Debug, Clone)]
pub(crate) struct Paths {
    /// The folder.
    pub(crate) dir: PathBuf,
    /// The kind config we generate.
    pub(crate) config: PathBuf,
    /// Our kubeconfig (0600).
    pub(crate) kubeconfig: PathBuf,
    /// Records which local image ID was loaded into which cluster.
    pub(crate) loaded_image: PathBuf,
    /// A Podman image archive.
    pub(crate) archive: PathBuf,
}

impl Paths {
    /// The paths under `state_root`.
    pub(crate) fn new(state_root: &Path, cluster: &str) -> Paths {
        let dir = state_root.join("kind");
        Paths {
            config: dir.join(format!("{cluster}.config.yaml")),
            kubeconfig: dir.join("kubeconfig"),
            loaded_image: dir.join(format!("{cluster}.loaded-image")),
            archive: dir.join("image.tar"),
            dir,
        }
    }
}

/// `kind get clusters`.
pub(crate) fn list_clusters(sh: &Shell) -> Result<Vec<String>> {
    let out = cmd!(sh, "kind get clusters").quiet().ignore_stderr().read().context("`kind get clusters` failed")?;
    Ok(out.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect())
}

/// Writes the cluster's kubeconfig (from `kind get kubeconfig`) to our file, mode 0600.
pub(crate) fn write_kubeconfig(sh: &Shell, name: &str, path: &Path) -> Result<()> {
    let args = dry_run::kind_get_kubeconfig_args(name);
    let text = cmd!(sh, "kind {args...}")
        .quiet()
        .read()
        .with_context(|| format!("`kind get kubeconfig --name {name}` failed"))?;
    e2e_migrations::lifecycle::record::write_private(path, text.as_bytes())?;
    Ok(())
}

/// Creates the cluster from `config_yaml`; on failure exports the logs, deletes the retained
/// remains, and says where the logs are.
pub(crate) fn create(sh: &Shell, name: &str, paths: &Paths, config_yaml: &str) -> Result<()> {
    e2e_migrations::lifecycle::record::write_private(&paths.config, config_yaml.as_bytes())?;
    let args = dry_run::kind_create_args(name, &paths.config, &paths.kubeconfig);
    let created = run_child(cmd!(sh, "kind {args...}"));
    // kind writes the kubeconfig with the user's umask: make it private either way
    set_private(&paths.kubeconfig);
    if let Err(e) = created {
        let logs = export_logs(sh, name, &paths.dir);
        let _ = delete(sh, name, &paths.kubeconfig);
        bail!("`kind create cluster --name {name}` failed: {e}{logs}");
    }
    Ok(())
}

fn set_private(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if path.exists() {
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    }
}

/// `kind delete cluster` (idempotent in kind itself).
pub(crate) fn delete(sh: &Shell, name: &str, kubeconfig: &Path) -> Result<()> {
    let args = dry_run::kind_delete_args(name, kubeconfig);
    run_child(cmd!(sh, "kind {args...}")).with_context(|| format!("`kind delete cluster --name {name}` failed"))?;
    Ok(())
}

/// Runs a command that reports on the terminal itself (`kind create cluster`, `docker save`):
/// with the spinners hidden meanwhile, or under `--quiet` with its output kept back and put in
/// the error if it fails.
fn run_child(cmd: Cmd<'_>) -> Result<()> {
    run_child_as(cmd, progress::quiet())
}

fn run_child_as(cmd: Cmd<'_>, quiet: bool) -> Result<()> {
    if !quiet {
        return Ok(progress::suspend(|| cmd.run())?);
    }
    let line = cmd.to_string();
    let out = cmd.quiet().ignore_status().output()?;
    if out.status.success() {
        return Ok(());
    }
    bail!(child_failure(&line, out.status, &out.stderr))
}

/// How many of a failed command's last stderr lines its error shows under `--quiet`.
const CHILD_LINES: usize = 20;

/// The error of a command that failed under `--quiet` (pure): the command, its exit status and
/// the last lines it wrote on stderr.
fn child_failure(line: &str, status: std::process::ExitStatus, stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.lines().collect();
    let mut out = format!("`{line}` failed: {status}");
    if lines.len() > CHILD_LINES {
        out.push_str(&format!("\n  ({} earlier lines not shown)", lines.len() - CHILD_LINES));
    }
    for l in &lines[lines.len().saturating_sub(CHILD_LINES)..] {
        out.push_str(&format!("\n  | {l}"));
    }
    out
}

/// Exports the cluster's logs under `dir/logs-<time>`; returns a line for the error message.
pub(crate) fn export_logs(sh: &Shell, name: &str, dir: &Path) -> String {
    let out = dry_run::logs_dir(dir, &chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string());
    let args = dry_run::kind_export_logs_args(name, &out);
    match cmd!(sh, "kind {args...}").quiet().ignore_stdout().run() {
        Ok(()) => format!("\n  cluster logs exported to {}", out.display()),
        Err(e) => format!("\n  (exporting the cluster logs to {} failed too: {e})", out.display()),
    }
}

/// The local engine's ID of `image`, if it has the image.
pub(crate) fn local_image_id(sh: &Shell, engine: Engine, image: &str) -> Option<String> {
    let program = engine.program();
    let format = "{{.Id}}";
    cmd!(sh, "{program} image inspect --format {format} {image}")
        .quiet()
        .ignore_stderr()
        .read()
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Loads `image` into the cluster when the local engine has it and this cluster has not been
/// given this image ID yet (recorded in `paths.loaded_image`). Returns what it did.
/// What the file of the loaded image says (pure): the image, its local id, and the uid of the
/// node it was loaded into. Another node uid (the cluster recreated, by any checkout) or another
/// local id (the image rebuilt) means it must be loaded again.
pub(crate) fn loaded_record(image: &str, id: &str, node_uid: &str) -> String {
    format!("{image} {id} node {node_uid}\n")
}

pub(crate) fn load_image(
    sh: &Shell,
    engine: Engine,
    image: &str,
    name: &str,
    paths: &Paths,
    fresh: bool,
    node_uid: &str,
) -> Result<String> {
    let Some(id) = local_image_id(sh, engine, image) else {
        return Ok(format!("{image} is not in the local {}: the node pulls it", engine.program()));
    };
    let record = loaded_record(image, &id, node_uid);
    if !fresh && std::fs::read_to_string(&paths.loaded_image).map(|r| r == record).unwrap_or(false) {
        return Ok(format!("{image} already loaded"));
    }
    for argv in dry_run::image_load_commands(engine, image, name, &paths.archive) {
        let (program, args) = argv.split_first().expect("a command");
        run_child(cmd!(sh, "{program} {args...}"))
            .with_context(|| format!("loading {image} into cluster {name} failed"))?;
    }
    let _ = std::fs::remove_file(&paths.archive);
    e2e_migrations::lifecycle::record::write_private(&paths.loaded_image, record.as_bytes())?;
    Ok(format!("loaded {image} from the local {}", engine.program()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn under_quiet_a_failed_command_says_its_last_stderr_lines_in_the_error() {
        let sh = Shell::new().unwrap();
        let script = "for i in $(seq 1 25); do echo line $i >&2; done; echo data; exit 3";
        let e = run_child_as(cmd!(sh, "sh -c {script}"), true).unwrap_err().to_string();
        assert!(e.starts_with("`sh -c "), "{e}");
        assert!(e.contains("failed: exit status: 3\n  (5 earlier lines not shown)\n  | line 6\n"), "{e}");
        assert!(e.ends_with("\n  | line 25"), "{e}");
        assert!(!e.contains("| data"), "stdout is not the error: {e}");
        run_child_as(cmd!(sh, "true"), true).unwrap();
    }

    fn probe(kind: bool, docker: EngineAnswer, podman: EngineAnswer) -> Probe {
        Probe { kind, podman_requested: false, docker, podman }
    }

    #[test]
    fn missing_kind_says_what_to_install() {
        let e = availability(&probe(false, EngineAnswer::Running, EngineAnswer::Missing)).unwrap_err();
        expect_test::expect![[r#"`kind` is not on PATH: install kind (https://kind.sigs.k8s.io/docs/user/quick-start/#installation; e.g. `go install sigs.k8s.io/kind@v0.27.0`)"#]]
        .assert_eq(&e);
    }

    #[test]
    fn no_engine_says_what_to_install() {
        let e = availability(&probe(true, EngineAnswer::Missing, EngineAnswer::Missing)).unwrap_err();
        expect_test::expect![[r#"no container engine for kind: install docker or podman and start it"#]].assert_eq(&e);
    }

    #[test]
    fn a_stopped_docker_says_to_start_it() {
        let said =
            "\nCannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?\n";
        let e = availability(&probe(true, EngineAnswer::NotRunning(said.into()), EngineAnswer::Missing)).unwrap_err();
        expect_test::expect![[r#"docker is installed but not running (`docker info`: Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?): start it (`sudo systemctl start docker`, or open Docker Desktop / colima)"#]]
        .assert_eq(&e);
        let e = availability(&probe(true, EngineAnswer::TimedOut, EngineAnswer::Missing)).unwrap_err();
        assert!(e.contains("did not answer within 5 s"), "{e}");
    }

    #[test]
    fn podman_serves_when_docker_is_absent_or_requested() {
        assert_eq!(availability(&probe(true, EngineAnswer::Missing, EngineAnswer::Running)), Ok(Engine::Podman));
        assert_eq!(availability(&probe(true, EngineAnswer::Running, EngineAnswer::Missing)), Ok(Engine::Docker));
        let p =
            Probe { kind: true, podman_requested: true, docker: EngineAnswer::Running, podman: EngineAnswer::Missing };
        assert!(availability(&p).unwrap_err().contains("install podman (KIND_EXPERIMENTAL_PROVIDER=podman)"));
    }

    fn ours(hash: &str) -> Marker {
        Marker::Ours { config_hash: Some(hash.to_string()), healthy: true }
    }

    fn claim(checkout: &str) -> Claim {
        Claim { namespace: format!("e2e-{checkout}"), checkout: checkout.into(), slot: Some(0), terminating: false }
    }

    const EXISTING: &[&str] = &["other", "e2e"];

    /// The facts of checkout `me` about cluster "e2e" (which exists): `marker`, and the
    /// checkouts' namespaces when the API answered.
    fn facts<'a>(existing: &'a [String], marker: &'a Marker, claims: Option<&'a [Claim]>) -> Facts<'a> {
        Facts {
            name: "e2e",
            existing,
            marker,
            claims,
            me: "me",
            namespace: "e2e-me",
            created_here: false,
            interrupted: None,
            engine: Engine::Docker,
        }
    }

    fn existing() -> Vec<String> {
        EXISTING.iter().map(|s| s.to_string()).collect()
    }

    /// Said when auto uses the local backend: why kind cannot run, without the advice to use
    /// the local backend it is already using; a user who asked for kind gets the advice.
    #[test]
    fn the_local_fallback_does_not_advise_itself() {
        let why = availability(&probe(false, EngineAnswer::Running, EngineAnswer::Missing)).unwrap_err();
        assert!(why.starts_with("`kind` is not on PATH: install kind"), "{why}");
        assert!(!why.contains("--backend local") && !why.ends_with(','), "{why}");
        assert_eq!(or_local(&why), format!("{why}, or use --backend local"));
    }

    /// The record of a loaded image names the node: a cluster that another checkout recreated
    /// has a new node, so a checkout that loaded the image into the old one loads it again.
    #[test]
    fn a_loaded_image_is_loaded_again_into_a_recreated_cluster() {
        let before = loaded_record("postgres:16", "sha256:aa", "uid-1");
        assert_eq!(before, "postgres:16 sha256:aa node uid-1\n");
        assert_ne!(before, loaded_record("postgres:16", "sha256:aa", "uid-2"), "the cluster was recreated");
        assert_ne!(before, loaded_record("postgres:16", "sha256:bb", "uid-1"), "the image was rebuilt");
        assert_ne!("postgres:16 sha256:aa\n", before, "a record of an earlier version loads again");
    }

    #[test]
    fn reuse_decisions() {
        let existing = existing();
        let (mine, theirs) = ([claim("me")], [claim("me"), claim("b")]);
        let m = ours("h");
        let f = facts(&existing, &m, Some(&mine));
        assert_eq!(decide(&Facts { name: "new", ..f.clone() }, false, "h"), Action::Create);
        assert_eq!(decide(&f, false, "h"), Action::Reuse);
        assert_eq!(decide(&facts(&existing, &m, Some(&theirs)), false, "h"), Action::Reuse);
        assert_eq!(decide(&f, true, "h"), Action::Recreate("--recreate".into()));
        assert!(matches!(decide(&f, false, "new"), Action::Recreate(w) if w.contains("config changed")));
        let sick = Marker::Ours { config_hash: Some("h".into()), healthy: false };
        assert!(
            matches!(decide(&facts(&existing, &sick, Some(&mine)), false, "h"), Action::Recreate(w) if w.contains("not Ready"))
        );
    }

    #[test]
    fn a_cluster_other_checkouts_use_is_never_recreated() {
        let existing = existing();
        let theirs = [claim("me"), claim("b")];
        let sick = Marker::Ours { config_hash: Some("h".into()), healthy: false };
        for (marker, recreate, want) in [(ours("h"), true, "h"), (sick, false, "h"), (ours("old"), false, "h")] {
            let Action::Refuse(e) = decide(&facts(&existing, &marker, Some(&theirs)), recreate, want) else {
                panic!("must refuse: {marker:?}, --recreate {recreate}")
            };
            assert!(e.contains("other checkouts use it: b"), "{e}");
        }
    }

    #[test]
    fn a_cluster_setup_did_not_create_is_refused_even_with_recreate() {
        let existing = existing();
        let Action::Refuse(e) = decide(&facts(&existing, &Marker::Foreign, Some(&[])), true, "h") else {
            panic!("must refuse")
        };
        expect_test::expect![[r#"a Kind cluster named "e2e" exists and its node lacks the label e2e-migrations/owner=xtask-e2e-setup; e2e-setup never changes or deletes a cluster it did not create: choose another cluster.name in e2e.toml (--config), or delete it yourself (`kind delete cluster --name e2e`)"#]]
        .assert_eq(&e);
    }

    /// The reviewer's must-fix: a shared cluster whose API server was slow or unreachable was
    /// recreated by setup and deleted by teardown of any checkout whose record said `owned`
    /// (every Kind record did, also of a checkout that only joined the cluster). The old
    /// decisions returned `Recreate` and `Delete` here; now setup and teardown refuse, whether
    /// this checkout created the cluster or joined it, with or without `--recreate`.
    #[test]
    fn an_unreachable_cluster_is_never_recreated_or_deleted() {
        let existing = existing();
        let down = Marker::Unreachable("no answer in 10 s".into());
        for created_here in [true, false] {
            let f = Facts { created_here, ..facts(&existing, &down, None) };
            for recreate in [false, true] {
                let a = decide(&f, recreate, "h");
                assert!(matches!(&a, Action::Refuse(_)), "created_here {created_here}, --recreate {recreate}: {a:?}");
            }
            let t = decide_teardown(&f);
            assert!(matches!(t, TeardownAction::Refuse(_)), "created_here {created_here}: {t:?}");
        }
    }

    /// What the refusals say: what could not be checked, and what to do.
    #[test]
    fn an_unreachable_cluster_says_what_it_could_not_check_and_what_to_do() {
        let existing = existing();
        let down = Marker::Unreachable("no answer in 10 s".into());
        let f = Facts { created_here: true, ..facts(&existing, &down, None) };
        let Action::Refuse(e) = decide(&f, true, "h") else { panic!("must refuse") };
        expect_test::expect![[r#"Kind cluster "e2e" exists but its API server does not answer (no answer in 10 s) (this checkout's setup created it, but other checkouts may have joined it since), so e2e-setup cannot check that it made the cluster, that it is healthy, or which checkouts use it: it is neither reused nor recreated (not even with --recreate). If the cluster is starting (after a restart of the machine or of docker), run setup again in a moment; is its node running? `docker ps -a --filter label=io.x-k8s.kind.cluster=e2e`; a stopped one starts with `docker start e2e-control-plane`, a paused one with `docker unpause e2e-control-plane`. To replace it, which deletes every checkout's database in it: `kind delete cluster --name e2e`, then run setup again"#]]
        .assert_eq(&e);
        let f = Facts { engine: Engine::Podman, ..facts(&existing, &down, None) };
        let TeardownAction::Refuse(e) = decide_teardown(&f) else { panic!("must refuse") };
        expect_test::expect![[r#"Kind cluster "e2e" does not answer (no answer in 10 s): this checkout's namespace e2e-me cannot be deleted, and which other checkouts use the cluster cannot be checked, so nothing was deleted and this checkout's record (if any) is kept. Run `cargo xtask e2e-teardown` again once the cluster answers (is its node running? `podman ps -a --filter label=io.x-k8s.kind.cluster=e2e`; a stopped one starts with `podman start e2e-control-plane`, a paused one with `podman unpause e2e-control-plane`). To delete the cluster for every checkout that uses it: `kind delete cluster --name e2e`, then `cargo xtask e2e-teardown` forgets this checkout's setup"#]]
        .assert_eq(&e);
    }

    /// A create that was killed leaves a note under the lock; no checkout joins a cluster with
    /// a note, so its remains are redone by setup and deleted by teardown, answering or not.
    #[test]
    fn the_remains_of_an_interrupted_create_are_redone_or_deleted() {
        let existing = existing();
        let note = "e2e-setup in /w/a (pid 1, since 2024-06-15T12:00:00Z)";
        let down = Marker::Unreachable("connection refused".into());
        let f = Facts { interrupted: Some(note), ..facts(&existing, &down, None) };
        assert!(matches!(decide(&f, false, "h"), Action::Recreate(w) if w.contains("(e2e-setup in /w/a (pid 1")));
        assert!(matches!(decide_teardown(&f), TeardownAction::Remains(w) if w.contains("interrupted")));
        let m = ours("h");
        let f = Facts { interrupted: Some(note), ..facts(&existing, &m, Some(&[])) };
        assert!(matches!(decide(&f, false, "h"), Action::Recreate(_)));
        assert_eq!(decide_teardown(&f), TeardownAction::NamespaceAndCluster);
        // a note never overrides what the API shows: not ours, or used by another checkout
        let theirs = [claim("b")];
        let f = Facts { interrupted: Some(note), ..facts(&existing, &m, Some(&theirs)) };
        assert!(matches!(decide(&f, false, "h"), Action::Refuse(_)));
        assert_eq!(decide_teardown(&f), TeardownAction::NamespaceOnly { others: vec!["b".into()] });
        let f = Facts { interrupted: Some(note), ..facts(&existing, &Marker::Foreign, None) };
        assert!(matches!(decide(&f, false, "h"), Action::Refuse(_)));
        assert!(matches!(decide_teardown(&f), TeardownAction::Refuse(_)));
        let gone = Facts { name: "gone", interrupted: Some(note), ..facts(&existing, &down, None) };
        assert_eq!(decide(&gone, false, "h"), Action::Create);
    }

    #[test]
    fn teardown_deletes_its_namespace_and_the_cluster_only_when_the_last_user() {
        let existing = existing();
        let m = ours("x");
        let (mine, theirs) = ([claim("me")], [claim("me"), claim("b"), claim("a")]);
        // other checkouts' namespaces: only this checkout's namespace goes
        for created_here in [true, false] {
            let f = Facts { created_here, ..facts(&existing, &m, Some(&theirs)) };
            assert_eq!(decide_teardown(&f), TeardownAction::NamespaceOnly { others: vec!["a".into(), "b".into()] });
        }
        // the last user deletes the cluster e2e-setup made, whichever checkout created it
        for created_here in [true, false] {
            let f = Facts { created_here, ..facts(&existing, &m, Some(&mine)) };
            assert_eq!(decide_teardown(&f), TeardownAction::NamespaceAndCluster);
        }
        let leaving = [claim("me"), Claim { terminating: true, ..claim("b") }];
        assert_eq!(decide_teardown(&facts(&existing, &m, Some(&leaving))), TeardownAction::NamespaceAndCluster);
        // a cluster e2e-setup did not make is never deleted, by the last user either
        let f = Facts { created_here: true, ..facts(&existing, &Marker::Foreign, Some(&[])) };
        assert!(matches!(decide_teardown(&f), TeardownAction::Refuse(e) if e.contains("not created by e2e-setup")));
        let gone = Facts { name: "gone", ..facts(&existing, &m, Some(&mine)) };
        assert!(matches!(decide_teardown(&gone), TeardownAction::Nothing(_)));
        // the namespaces could not be listed: nothing goes
        assert!(matches!(decide_teardown(&facts(&existing, &m, None)), TeardownAction::Refuse(_)));
    }

    #[test]
    fn the_record_says_created_only_after_a_create_or_of_a_cluster_it_created() {
        assert!(created_here(&Action::Create, false));
        assert!(created_here(&Action::Recreate("--recreate".into()), false));
        assert!(!created_here(&Action::Reuse, false), "joining a cluster another checkout made");
        assert!(created_here(&Action::Reuse, true), "a warm setup of the checkout that made it");
    }
}
