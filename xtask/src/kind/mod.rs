//! The Kind and existing-cluster backends (`--backend kind|kube`): the cluster, PostgreSQL in it,
//! and the connection the migrations run over.
//!
//! - [`config`]: `e2e.toml` and the typed Kind cluster config;
//! - [`manifests`]: the typed Kubernetes objects;
//! - [`dry_run`]: the ordered commands and manifests that `--dry-run` prints, and the argument
//!   lists the real run passes to `kind` and the container engine (pure);
//! - [`cluster`]: the `kind` CLI, the availability probe and the reuse/ownership decisions;
//! - [`deploy`]: server-side apply and the readiness watch;
//! - [`forward`]: the NodePort URL or the port-forward;
//! - [`lock`]: the machine-wide lock of a Kind cluster and the note of an interrupted create;
//! - [`run`]: the run id and creation time a setup's objects carry;
//! - [`remove`]: teardown of a run, a namespace, or what earlier runs left;
//! - [`stale`]: which runs `e2e-teardown --stale AGE` removes (pure);
//! - [`share`]: how checkouts on one machine share a cluster (pure).

pub(crate) mod cluster;
pub(crate) mod config;
pub(crate) mod deploy;
pub(crate) mod dry_run;
pub(crate) mod forward;
pub(crate) mod lock;
pub(crate) mod manifests;
#[cfg(test)]
mod pod_security;
pub(crate) mod remove;
#[cfg(test)]
mod role;
pub(crate) mod run;
pub(crate) mod share;
pub(crate) mod stale;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use e2e_migrations::kube::rbac::Need;
use e2e_migrations::kube::Credentials;
use e2e_migrations::lifecycle::workspace::checkout_tag;
use e2e_migrations::lifecycle::{self, BackendKind, Phase, Saved, SetupState, Workspace};
use k8s_openapi::api::core::v1::{Namespace, Node};
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};
use xshell::Shell;

use self::cluster::{Action, Marker, Paths, TeardownAction};
use self::config::{E2eConfig, KindCluster, CONFIG_FILE, CONFIG_HASH_LABEL, OWNER_LABEL, OWNER_VALUE};
use self::deploy::NamespaceMode;
use self::manifests::{Exposure, Manifests, RunMeta};
use crate::cli_util::Step;
use crate::flags::{Setup, Teardown};
use crate::progress::say;

/// Why kind cannot serve here, or `None` when kind and a running container engine are present.
pub(crate) fn unavailable_reason() -> Option<String> {
    let sh = Shell::new().ok()?;
    cluster::availability(&cluster::probe(&sh)).err()
}

fn shell(ws: &Workspace) -> Result<Shell> {
    let sh = Shell::new().context("cannot set up a shell for kind")?;
    sh.change_dir(&ws.root);
    Ok(sh)
}

/// The settings: `explicit` (taken against the workspace root when relative), else `e2e.toml`
/// at the root when there is one, else the defaults; and the file read, absolute.
fn load_config(ws: &Workspace, explicit: Option<&Path>) -> Result<(E2eConfig, Option<PathBuf>)> {
    let explicit = explicit.map(|p| ws.resolve(p));
    let (config, path) = E2eConfig::load(explicit.as_deref(), &ws.root.join(CONFIG_FILE))?;
    if let Some(p) = &path {
        say!("  settings: {}", p.display());
    }
    Ok((config, path))
}

/// The command that removes what a kube setup made, from anywhere (pure).
pub(crate) fn kube_cleanup(context: &str, namespace: &str, run_id: &str, existing: bool) -> String {
    let mut c = format!("cargo xtask e2e-teardown --backend kube --context {context} --namespace {namespace}");
    if existing {
        c.push_str(&format!(" --existing-namespace --run-id {run_id}"));
    }
    c
}

/// Where `--backend kube` works: the context and namespace (both required, so that a shared
/// cluster is never touched by accident through whatever context is current).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KubeNamespace {
    /// The kubeconfig context.
    pub(crate) context: String,
    /// The namespace setup owns.
    pub(crate) namespace: String,
}

/// Resolves `--context` and `--namespace`, falling back to what setup saved (pure).
pub(crate) fn kube_namespace(
    context: Option<&str>,
    namespace: Option<&str>,
    saved: Option<&SetupState>,
    cmd: &str,
) -> Result<KubeNamespace> {
    let saved = saved.filter(|s| s.backend == BackendKind::Kube);
    let context = context.map(str::to_string).or_else(|| saved.and_then(|s| s.context.clone()));
    let namespace = namespace.map(str::to_string).or_else(|| saved.and_then(|s| s.namespace.clone()));
    let Some(context) = context else {
        bail!("{cmd} --backend kube needs --context CONTEXT: the kubeconfig context of the existing cluster (see `kubectl config get-contexts`)");
    };
    let Some(namespace) = namespace else {
        bail!("{cmd} --backend kube needs --namespace NAMESPACE: a namespace that setup creates and owns (teardown deletes it)");
    };
    config::check_dns_label("--namespace", &namespace)?;
    Ok(KubeNamespace { context, namespace })
}

/// The kubeconfig file for `--backend kube` that later commands read: of `$KUBECONFIG` (which
/// may list several files), the first that defines `context`; else `~/.kube/config`.
fn user_kubeconfig(context: &str) -> PathBuf {
    let home = PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".kube").join("config");
    pick_kubeconfig(std::env::var_os("KUBECONFIG").as_deref(), home, |p| {
        kube::config::Kubeconfig::read_from(p).map(|kc| kc.contexts.iter().any(|c| c.name == context)).unwrap_or(false)
    })
}

/// Picks the file from a `KUBECONFIG` value (pure over `defines`, which says whether a file
/// defines the wanted context).
fn pick_kubeconfig(list: Option<&std::ffi::OsStr>, home: PathBuf, defines: impl Fn(&Path) -> bool) -> PathBuf {
    let Some(list) = list.filter(|k| !k.is_empty()) else {
        return home;
    };
    let files: Vec<PathBuf> = std::env::split_paths(list).filter(|p| !p.as_os_str().is_empty()).collect();
    files.iter().find(|p| defines(p)).or(files.first()).cloned().unwrap_or(home)
}

fn sets_label(args: &Setup) -> String {
    args.sets.sets.clone().unwrap_or_else(|| "all".to_string())
}

/// The manifests as `--dry-run` shows them: the Secret's values readable, the password redacted.
fn dry_run_manifests(
    pg: &config::PostgresSettings,
    namespace: &str,
    exposure: Exposure,
    run: &RunMeta,
    own_namespace: bool,
    namespace_labels: &std::collections::BTreeMap<String, String>,
) -> String {
    let mut m = Manifests::new(pg, namespace, "<generated>", exposure, run, own_namespace);
    if let Some(n) = &mut m.namespace {
        n.metadata.labels.get_or_insert_with(Default::default).extend(namespace_labels.clone());
    }
    let data = m.secret.data.take().unwrap_or_default();
    m.secret.string_data =
        Some(data.into_iter().map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned())).collect());
    m.to_yaml()
}

/// The run's labels for this setup: the run this checkout's record holds, else a new one (for
/// a real setup; the caller saves it in the record before it makes anything on the cluster),
/// renewed now. A dry run writes nothing: a run not recorded yet shows a placeholder id.
fn run_meta(saved: &Saved, dry_run: bool) -> Result<RunMeta> {
    let now = chrono::Utc::now();
    let rec = if dry_run {
        run::recorded(saved, now)?.unwrap_or(run::RunRecord { run_id: "<run-id>".to_string(), created_at: now })
    } else {
        run::recorded_or_new(saved, now)?
    };
    Ok(RunMeta {
        run_id: rec.run_id,
        created_at: rec.created_at,
        renewed_at: now,
        created_by: run::created_by(|k| std::env::var(k).ok()),
    })
}

/// What a cluster setup made: the state to save, a connection for the migrations, and what it
/// reused when nothing was made anew (a warm setup).
pub(crate) struct Made {
    /// The state.
    pub(crate) state: SetupState,
    /// A connection to the database.
    pub(crate) client: tokio_postgres::Client,
    /// What was reused (`namespace N, pod P`), when nothing was created.
    pub(crate) reused: Option<String>,
}

/// Creates or reuses the cluster, deploys PostgreSQL and connects to it.
/// Returns `None` after a dry run (which only prints).
pub(crate) async fn setup(args: &Setup, ws: &Workspace, saved: &Saved) -> Result<Option<Made>> {
    let (config, settings_file) = load_config(ws, args.cluster.config.as_deref())?;
    match args.backend {
        crate::flags::Backend::Kube => setup_kube(args, &config, settings_file, ws, saved).await,
        _ => setup_kind(args, &config, settings_file, ws, saved).await,
    }
}

/// Saves `st` as a setup still being made, before anything is made on the cluster: the run id
/// is then known to every later setup and to teardown, also when this one fails or is killed.
async fn save_creating(ws: &Workspace, st: &SetupState) -> Result<()> {
    lifecycle::save_setup(ws, st.clone(), Phase::Creating).await?;
    Ok(())
}

/// The recorded setup of this backend, when the record is this checkout's.
fn recorded(saved: &Saved, backend: BackendKind) -> Option<&SetupState> {
    match saved {
        Saved::Ours(r) if r.setup.backend == backend => Some(&r.setup),
        _ => None,
    }
}

async fn setup_kube(
    args: &Setup,
    config: &E2eConfig,
    settings_file: Option<PathBuf>,
    ws: &Workspace,
    saved: &Saved,
) -> Result<Option<Made>> {
    let t = kube_namespace(args.cluster.context.as_deref(), args.cluster.namespace.as_deref(), None, "e2e-setup")?;
    let existing = args.cluster.existing_namespace || config.kube.existing_namespace;
    let mode = if existing { NamespaceMode::Existing } else { NamespaceMode::Create };
    let pg = &config.postgres;
    if args.dry_run {
        let run = run_meta(saved, true)?;
        let yaml = dry_run_manifests(pg, &t.namespace, Exposure::ClusterIp, &run, !existing, &Default::default());
        let d = dry_run::DeployPlan {
            manifests_yaml: &yaml,
            target: format!("context {}, namespace {}", t.context, t.namespace),
            namespace: &t.namespace,
            mode,
            run_id: &run.run_id,
            timeout_s: pg.ready_timeout_s,
            connect: format!(
                "port-forward to the ready pod's port {} over the API server",
                e2e_migrations::kube::POSTGRES_PORT
            ),
            sets: sets_label(args),
            state_dir: &ws.state_dir,
        };
        print!("{}", dry_run::render(&dry_run::kube_setup(&d)));
        return Ok(None);
    }
    // the kubeconfig the setup being continued used (a later shell may have another KUBECONFIG)
    let kubeconfig = recorded(saved, BackendKind::Kube)
        .filter(|s| s.context.as_deref() == Some(t.context.as_str()))
        .and_then(|s| s.kubeconfig.clone())
        .unwrap_or_else(|| user_kubeconfig(&t.context));
    let step = Step::start(format!("cluster (context {})", t.context));
    let client = e2e_migrations::kube::client(Some(&kubeconfig), Some(&t.context)).await?;
    let version = client
        .apiserver_version()
        .await
        .with_context(|| format!("reaching the API server of context {} (--context)", t.context))?;
    step.done(format!("Kubernetes {}.{}", version.major, version.minor));
    let run = run_meta(saved, false)?;
    let st = SetupState {
        kubeconfig: Some(kubeconfig),
        context: Some(t.context.clone()),
        namespace: Some(t.namespace.clone()),
        owned: !existing,
        sets: recorded(saved, BackendKind::Kube).map(|s| s.sets.clone()).unwrap_or_default(),
        run_id: Some(run.run_id.clone()),
        run_created_at: Some(run.created_at),
        existing_namespace: existing,
        settings_file,
        ..SetupState::new(BackendKind::Kube)
    };
    save_creating(ws, &st).await?;
    let whose = if existing { ", made by someone else" } else { "" };
    let step = Step::start(format!("PostgreSQL in namespace {}{whose} (run {})", t.namespace, run.run_id));
    let d = deploy::Deploy {
        client: client.clone(),
        namespace: &t.namespace,
        namespace_flag: "--namespace",
        pg,
        exposure: Exposure::ClusterIp,
        mode,
        run: &run,
        checkout: None,
        cleanup: format!(
            "cargo xtask e2e-teardown (from another checkout: {})",
            kube_cleanup(&t.context, &t.namespace, &run.run_id, existing)
        ),
    };
    let deployed = deploy::deploy(&d, &step).await?;
    step.done(deploy::deployed_outcome(&deployed));
    let step = Step::start("PostgreSQL ready");
    let pod = deploy::wait_ready(&d, &step).await?;
    step.done(format!("pod {pod}"));
    let step = Step::start("connect");
    let creds =
        Credentials { user: pg.user.clone(), password: deployed.password.clone(), database: pg.database.clone() };
    let pg_client = forward::connect_port_forward(&client, &t.namespace, &pod, &creds, args.connect_timeout).await?;
    step.done(format!("port-forward to pod {pod}"));
    let reused =
        (deployed.reused && !deployed.created_namespace).then(|| format!("namespace {}, pod {pod}", t.namespace));
    Ok(Some(Made { state: st, client: pg_client, reused }))
}

/// Asks the cluster (through our kubeconfig) whether its node carries our owner label.
async fn marker(kubeconfig: &Path, name: &str) -> Marker {
    let ask = async {
        let client: Client = e2e_migrations::kube::client(Some(kubeconfig), Some(&format!("kind-{name}"))).await?;
        let nodes: Api<Node> = Api::all(client);
        // kube-rs's message says its causes itself
        let list = nodes.list(&ListParams::default()).await.map_err(|e| anyhow::anyhow!("listing the nodes: {e}"))?;
        Ok::<_, anyhow::Error>(list.items)
    };
    let nodes = match tokio::time::timeout(Duration::from_secs(10), ask).await {
        Ok(Ok(nodes)) => nodes,
        Ok(Err(e)) => return Marker::Unreachable(format!("{e:#}")),
        Err(_) => return Marker::Unreachable("no answer in 10 s".to_string()),
    };
    let ours: Vec<&Node> = nodes
        .iter()
        .filter(|n| {
            n.metadata.labels.as_ref().and_then(|l| l.get(OWNER_LABEL)).map(String::as_str) == Some(OWNER_VALUE)
        })
        .collect();
    let Some(first) = ours.first() else {
        return Marker::Foreign;
    };
    let config_hash = first.metadata.labels.as_ref().and_then(|l| l.get(CONFIG_HASH_LABEL)).cloned();
    let healthy = nodes.iter().all(|n| {
        n.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    });
    Marker::Ours { config_hash, healthy }
}

/// The uid of the cluster's first node (by name): it changes when the cluster is recreated,
/// whichever checkout recreated it.
async fn node_uid(client: &Client) -> Result<String> {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut list =
        nodes.list(&ListParams::default()).await.map_err(|e| anyhow::anyhow!("listing the nodes: {e}"))?.items;
    list.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    list.first().and_then(|n| n.metadata.uid.clone()).context("the cluster has no node")
}

/// Whether the record names a Kind setup in cluster `name` (this checkout's namespace there).
fn records_cluster(saved: Option<&SetupState>, name: &str) -> bool {
    saved.is_some_and(|s| s.backend == BackendKind::Kind && s.cluster.as_deref() == Some(name))
}

/// Who this process is, for the lock's file and the note of a create: `e2e-setup in /w/app
/// (pid 4242, since ...)`.
fn holder(command: &str, ws: &Workspace) -> String {
    lock::holder_line(command, &ws.root, std::process::id(), chrono::Utc::now())
}

/// Takes the machine-wide lock of cluster `name` (see [`lock`]).
async fn take_lock(name: &str, command: &str, ws: &Workspace, step: &Step) -> Result<lock::ClusterLock> {
    let paths = lock::LockPaths::of_user(name)?;
    lock::ClusterLock::acquire(&paths, &holder(command, ws), lock::LOCK_WAIT, step).await
}

/// What cluster `name` says of itself: our kubeconfig written from `kind get kubeconfig` (which
/// needs the node running), then its node read through the API. A cluster that is not there,
/// or whose kubeconfig cannot be read, is [`Marker::Unreachable`].
///
/// A node of ours that is not Ready is asked again for up to [`NODE_READY_WAIT`]: just after
/// `docker start` or `unpause` the API answers before the node is Ready, and a cluster that is
/// only starting must not be taken for a broken one (which setup recreates).
async fn ask_cluster(sh: &Shell, existing: &[String], name: &str, paths: &Paths, step: &Step) -> Marker {
    if !existing.iter().any(|c| c == name) {
        return Marker::Unreachable("no such cluster".to_string());
    }
    if let Err(e) = cluster::write_kubeconfig(sh, name, &paths.kubeconfig) {
        return Marker::Unreachable(format!("{e:#}"));
    }
    let deadline = std::time::Instant::now() + NODE_READY_WAIT;
    loop {
        let m = marker(&paths.kubeconfig, name).await;
        if !matches!(m, Marker::Ours { healthy: false, .. }) || std::time::Instant::now() >= deadline {
            return m;
        }
        step.detail(format!(
            "waiting for the node of cluster {name} to be Ready (at most {} s)",
            NODE_READY_WAIT.as_secs()
        ));
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// How long a node of ours that answers but is not Ready is given to become Ready.
const NODE_READY_WAIT: Duration = Duration::from_secs(60);

/// The namespaces of a shared Kind cluster that checkouts hold (labelled with their tag).
async fn list_claims(client: &Client) -> Result<Vec<share::Claim>> {
    let api: Api<Namespace> = Api::all(client.clone());
    let list = api
        .list(&ListParams::default().labels(share::CHECKOUT_LABEL))
        .await
        .map_err(|e| deploy::api_error(e, Need::ListNamespaces, None, "listing the checkouts' namespaces"))?;
    Ok(list
        .items
        .iter()
        .map(|n| {
            let labels = n.metadata.labels.clone().unwrap_or_default();
            share::Claim {
                namespace: n.name_any(),
                checkout: labels.get(share::CHECKOUT_LABEL).cloned().unwrap_or_default(),
                slot: labels.get(share::SLOT_LABEL).and_then(|s| s.parse().ok()),
                terminating: n.metadata.deletion_timestamp.is_some(),
            }
        })
        .collect())
}

/// This checkout's namespace on a shared Kind cluster: `--namespace`, else
/// `<postgres.namespace>-<checkout tag>` (pure).
fn kind_namespace(flag: Option<&str>, base: &str, tag: &str) -> String {
    match flag {
        Some(n) => n.to_string(),
        None => share::checkout_namespace(base, tag),
    }
}

/// The settings with this checkout's port slot applied: NodePort and host port `+ slot` (pure).
fn with_slot(pg: &config::PostgresSettings, slot: u16) -> config::PostgresSettings {
    config::PostgresSettings { node_port: pg.node_port + slot, host_port: pg.host_port + slot, ..pg.clone() }
}

/// The labels that mark a namespace as this checkout's, with its port slot.
fn checkout_labels(tag: &str, slot: u16) -> std::collections::BTreeMap<String, String> {
    std::collections::BTreeMap::from([
        (share::CHECKOUT_LABEL.to_string(), tag.to_string()),
        (share::SLOT_LABEL.to_string(), slot.to_string()),
    ])
}

async fn setup_kind(
    args: &Setup,
    config: &E2eConfig,
    settings_file: Option<PathBuf>,
    ws: &Workspace,
    saved: &Saved,
) -> Result<Option<Made>> {
    let sh = shell(ws)?;
    let name = &config.cluster.name;
    let pg = &config.postgres;
    let tag = checkout_tag(&ws.root);
    let namespace = kind_namespace(args.cluster.namespace.as_deref(), &pg.namespace, &tag);
    config::check_dns_label("--namespace", &namespace)?;
    let kind_config = KindCluster::from_config(config);
    let config_yaml = kind_config.to_yaml();
    let paths = Paths::new(&ws.state_dir, name);
    if args.cluster.existing_namespace || config.kube.existing_namespace {
        bail!("--existing-namespace is for --backend kube: the Kind cluster and its namespace are setup's own");
    }
    if let Some(prev) = recorded(saved, BackendKind::Kind).filter(|s| s.cluster.as_deref() != Some(name.as_str())) {
        bail!(
            "this checkout is set up already: a {}; the settings now name cluster {name}: `cargo xtask e2e-teardown` \
             removes the first, then set up again",
            crate::follow::describe(prev)
        );
    }

    if args.dry_run {
        let run = run_meta(saved, true)?;
        let engine = cluster::availability(&cluster::probe(&sh)).unwrap_or(dry_run::Engine::Docker);
        let labels = checkout_labels(&tag, 0);
        let yaml = dry_run_manifests(pg, &namespace, Exposure::NodePort(pg.node_port), &run, true, &labels);
        let k = dry_run::KindSetup {
            cluster: name,
            config_path: &paths.config,
            config_yaml: &config_yaml,
            kubeconfig: &paths.kubeconfig,
            engine,
            image: &pg.image,
            archive: &paths.archive,
            kind_dir: &paths.dir,
            lock: &lock::LockPaths::of_user(name)?,
        };
        let d = dry_run::DeployPlan {
            manifests_yaml: &yaml,
            target: format!("context kind-{name}, namespace {namespace} (this checkout's; shown with port slot 0)"),
            namespace: &namespace,
            mode: NamespaceMode::Kind,
            run_id: &run.run_id,
            timeout_s: pg.ready_timeout_s,
            connect: format!(
                "{} (host port {} + this checkout's port slot, 0-{})",
                forward::node_port_url(&pg.user, "***", pg.host_port, &pg.database),
                pg.host_port,
                share::SLOTS - 1
            ),
            sets: sets_label(args),
            state_dir: &ws.state_dir,
        };
        print!("{}", dry_run::render(&dry_run::kind_setup(&k, &d)));
        return Ok(None);
    }

    let step = Step::start("kind and container engine");
    let engine = cluster::availability(&cluster::probe(&sh))
        .map_err(|e| anyhow::anyhow!("--backend kind: {}", cluster::or_local(&e)))?;
    step.done(engine.program());
    let run = run_meta(saved, false)?;

    let step = Step::start(format!("cluster {name}"));
    // held until this checkout's namespace (its claim on the cluster) exists
    let lock = take_lock(name, "e2e-setup", ws, &step).await?;
    let existing = cluster::list_clusters(&sh)?;
    let marker = ask_cluster(&sh, &existing, name, &paths, &step).await;
    let context = format!("kind-{name}");
    // who uses the cluster (only a cluster of ours that answers can say)
    let claims = match &marker {
        Marker::Ours { .. } => {
            let client = e2e_migrations::kube::client(Some(&paths.kubeconfig), Some(&context)).await?;
            Some(list_claims(&client).await?)
        }
        _ => None,
    };
    let before = recorded(saved, BackendKind::Kind).filter(|s| s.cluster.as_deref() == Some(name.as_str()));
    let interrupted = lock.interrupted_create();
    let facts = cluster::Facts {
        name,
        existing: &existing,
        marker: &marker,
        claims: claims.as_deref(),
        me: &tag,
        namespace: &namespace,
        created_here: before.is_some_and(|s| s.cluster_created),
        interrupted: interrupted.as_deref(),
        engine,
    };
    let action = cluster::decide(&facts, args.recreate, &kind_config.hash());
    if let Action::Refuse(e) = &action {
        bail!(e.clone());
    }
    let mut st = SetupState {
        kubeconfig: Some(paths.kubeconfig.clone()),
        context: Some(context.clone()),
        namespace: Some(namespace.clone()),
        cluster: Some(name.clone()),
        // this checkout's namespace; the cluster is shared (see cluster_created)
        owned: true,
        // said once the create succeeds (below); a failed create never records one
        cluster_created: action == Action::Reuse && facts.created_here,
        sets: recorded(saved, BackendKind::Kind).map(|s| s.sets.clone()).unwrap_or_default(),
        run_id: Some(run.run_id.clone()),
        run_created_at: Some(run.created_at),
        settings_file,
        ..SetupState::new(BackendKind::Kind)
    };
    save_creating(ws, &st).await?;
    let fresh = match &action {
        Action::Refuse(_) => unreachable!("refused above"),
        Action::Reuse => false,
        Action::Create | Action::Recreate(_) => {
            if let Action::Recreate(why) = &action {
                say!("  recreating cluster {name}: {why}");
            }
            lock.note_create(&holder("e2e-setup", ws))?;
            let made = (|| {
                if matches!(action, Action::Recreate(_)) {
                    cluster::delete(&sh, name, &paths.kubeconfig)?;
                }
                cluster::create(&sh, name, &paths, &config_yaml)
            })();
            if let Err(e) = made {
                // a create that failed and left no cluster leaves nothing to redo either
                if cluster::list_clusters(&sh).is_ok_and(|c| !c.iter().any(|c| c == name)) {
                    lock.clear_create()?;
                }
                return Err(e);
            }
            lock.clear_create()?;
            st.cluster_created = cluster::created_here(&action, facts.created_here);
            save_creating(ws, &st).await?;
            true
        }
    };
    step.done(match action {
        Action::Reuse => "reused".to_string(),
        Action::Create => "created".to_string(),
        _ => "recreated".to_string(),
    });

    let result = async {
        let step = Step::start("image");
        let client = e2e_migrations::kube::client(Some(&paths.kubeconfig), Some(&context)).await?;
        let node = node_uid(&client).await?;
        let what = cluster::load_image(&sh, engine, &pg.image, name, &paths, fresh, &node)?;
        step.done(what);
        let claims = if fresh { Vec::new() } else { list_claims(&client).await? };
        let slot = share::choose_slot(&tag, &claims).map_err(anyhow::Error::msg)?;
        let pg = with_slot(pg, slot);
        let step = Step::start(format!("PostgreSQL in namespace {namespace} (port slot {slot})"));
        let flag = if args.cluster.namespace.is_some() { "--namespace" } else { "postgres.namespace in e2e.toml" };
        let d = deploy::Deploy {
            client,
            namespace: &namespace,
            namespace_flag: flag,
            pg: &pg,
            exposure: Exposure::NodePort(pg.node_port),
            mode: NamespaceMode::Kind,
            run: &run,
            checkout: Some((&tag, checkout_labels(&tag, slot))),
            cleanup: "cargo xtask e2e-teardown (this checkout's namespace; the cluster too when no other checkout \
                      uses it)"
                .to_string(),
        };
        let deployed = deploy::deploy(&d, &step).await?;
        // this checkout's namespace now holds its claim: other checkouts may go on
        drop(lock);
        step.done(deploy::deployed_outcome(&deployed));
        let step = Step::start("PostgreSQL ready");
        let pod = deploy::wait_ready(&d, &step).await?;
        step.done(format!("pod {pod}"));
        let step = Step::start("connect");
        let url = forward::node_port_url(&pg.user, &deployed.password, pg.host_port, &pg.database);
        let client = forward::connect_url(&url, Duration::from_secs(20), args.connect_timeout).await?;
        step.done(format!("127.0.0.1:{} (NodePort {})", pg.host_port, pg.node_port));
        let reused = (!fresh && deployed.reused && !deployed.created_namespace)
            .then(|| format!("cluster {name}, namespace {namespace}, pod {pod}"));
        Ok::<_, anyhow::Error>((url, client, reused))
    }
    .await;
    let (url, client, reused) = match result {
        Ok(r) => r,
        Err(e) => {
            let logs = cluster::export_logs(&sh, name, &paths.dir);
            return Err(e.context(format!("setup of cluster {name} failed{logs}")));
        }
    };
    st.database_url = Some(url);
    Ok(Some(Made { state: st, client, reused }))
}

/// Deletes what setup made in a cluster (`backend` kind or kube). Returns whether what the
/// recorded setup (`state`) names is gone, so that its record may be forgotten.
pub(crate) async fn teardown(
    args: &Teardown,
    backend: crate::flags::Backend,
    state: Option<&SetupState>,
    ws: &Workspace,
) -> Result<bool> {
    if backend == crate::flags::Backend::Kube {
        return teardown_kube(args, state, ws).await;
    }
    let explicit = args.cluster.config.clone().or_else(|| state.and_then(|s| s.settings_file.clone()));
    let (config, _) = load_config(ws, explicit.as_deref())?;
    let name = state.and_then(|s| s.cluster.clone()).unwrap_or_else(|| config.cluster.name.clone());
    let tag = checkout_tag(&ws.root);
    let namespace = state
        .and_then(|s| s.namespace.clone())
        .unwrap_or_else(|| kind_namespace(args.cluster.namespace.as_deref(), &config.postgres.namespace, &tag));
    let paths = Paths::new(&ws.state_dir, &name);
    // --keep changes nothing, in a dry run too
    if args.keep {
        say!(
            "keeping Kind cluster {name} and namespace {namespace} (--keep / KEEP_CLUSTER=true); `cargo xtask \
             e2e-teardown` deletes them later"
        );
        return Ok(false);
    }
    let lock_paths = lock::LockPaths::of_user(&name)?;
    if args.dry_run {
        let t = dry_run::KindTeardown {
            cluster: &name,
            namespace: &namespace,
            kubeconfig: &paths.kubeconfig,
            lock: &lock_paths,
            state_dir: &ws.state_dir,
        };
        print!("{}", dry_run::render(&dry_run::kind_teardown(&t)));
        return Ok(false);
    }
    let sh = shell(ws)?;
    let engine = match cluster::availability(&cluster::probe(&sh)) {
        Ok(engine) => engine,
        Err(why) if records_cluster(state, &name) => {
            bail!("--backend kind: cannot delete this checkout's namespace {namespace} in cluster {name}: {why}")
        }
        Err(why) => {
            say!("nothing to tear down: no Kind cluster can exist here ({why})");
            return Ok(true);
        }
    };
    let step = Step::start(format!("cluster {name}"));
    // held until the cluster is deleted or kept, so that no setup joins it meanwhile
    let lock = take_lock(&name, "e2e-teardown", ws, &step).await?;
    let existing = cluster::list_clusters(&sh)?;
    let marker = ask_cluster(&sh, &existing, &name, &paths, &step).await;
    let client = match &marker {
        Marker::Ours { .. } => {
            Some(e2e_migrations::kube::client(Some(&paths.kubeconfig), Some(&format!("kind-{name}"))).await?)
        }
        _ => None,
    };
    let claims = match &client {
        Some(c) => Some(list_claims(c).await?),
        None => None,
    };
    let interrupted = lock.interrupted_create();
    let facts = cluster::Facts {
        name: &name,
        existing: &existing,
        marker: &marker,
        claims: claims.as_deref(),
        me: &tag,
        namespace: &namespace,
        created_here: state.is_some_and(|s| records_cluster(Some(s), &name) && s.cluster_created),
        interrupted: interrupted.as_deref(),
        engine,
    };
    let delete_namespace = || async {
        let Some(client) = &client else {
            return Ok::<_, anyhow::Error>(String::new());
        };
        let run_id = state.and_then(|s| s.run_id.as_deref());
        Ok(match remove::request_namespace_delete(client, &namespace, run_id, Some(&tag)).await? {
            remove::Deleted::Deleted => format!("namespace {namespace} deleted; "),
            remove::Deleted::Missing => format!("no namespace {namespace}; "),
        })
    };
    let delete_cluster = || -> Result<()> {
        // a delete killed half way leaves remains that answer nothing: the note lets the next
        // setup redo them and the next teardown finish them (no checkout can use them)
        lock.note_create(&holder("e2e-teardown", ws))?;
        cluster::delete(&sh, &name, &paths.kubeconfig)?;
        for f in [&paths.kubeconfig, &paths.config, &paths.loaded_image] {
            let _ = std::fs::remove_file(f);
        }
        lock.clear_create()
    };
    match cluster::decide_teardown(&facts) {
        TeardownAction::Nothing(why) => {
            lock.clear_create()?;
            step.done(format!("nothing to delete: {why}"));
        }
        TeardownAction::Refuse(e) => bail!(e),
        TeardownAction::NamespaceOnly { others } => {
            let ns = delete_namespace().await?;
            step.done(format!("{ns}the cluster is kept: other checkouts use it ({})", others.join(", ")));
        }
        TeardownAction::NamespaceAndCluster => {
            let ns = delete_namespace().await?;
            delete_cluster()?;
            step.done(format!("{ns}cluster deleted (no other checkout uses it)"));
        }
        TeardownAction::Remains(why) => {
            delete_cluster()?;
            step.done(format!("deleted {why}"));
        }
    }
    Ok(true)
}

/// Deletes what setup made in an existing cluster; returns whether it was the recorded setup's
/// run (so its record may be forgotten).
async fn teardown_kube(args: &Teardown, state: Option<&SetupState>, ws: &Workspace) -> Result<bool> {
    let t = kube_namespace(args.cluster.context.as_deref(), args.cluster.namespace.as_deref(), state, "e2e-teardown")?;
    let explicit = args.cluster.config.clone().or_else(|| state.and_then(|s| s.settings_file.clone()));
    let (config, _) = load_config(ws, explicit.as_deref())?;
    // the state counts only when it is about this context and namespace
    let state = state.filter(|s| {
        s.namespace.as_deref() == Some(t.namespace.as_str()) && s.context.as_deref() == Some(t.context.as_str())
    });
    let existing = args.cluster.existing_namespace
        || config.kube.existing_namespace
        || state.is_some_and(|s| s.existing_namespace);
    let recorded = state.and_then(|s| s.run_id.clone());
    if let Some(r) = &args.run_id {
        e2e_migrations::kube::check_run_id(r).context("--run-id")?;
    }
    let run_id = args.run_id.clone().or(recorded.clone());
    if args.dry_run {
        let target = format!("context {}", t.context);
        print!(
            "{}",
            dry_run::render(&dry_run::kube_teardown(&target, &t.namespace, run_id.as_deref(), existing, &ws.state_dir))
        );
        return Ok(false);
    }
    if args.keep {
        say!("keeping namespace {} (--keep / KEEP_CLUSTER=true)", t.namespace);
        return Ok(false);
    }
    let kubeconfig = state.and_then(|s| s.kubeconfig.clone());
    let client = e2e_migrations::kube::client(kubeconfig.as_deref(), Some(&t.context)).await?;
    if existing {
        let Some(run_id) = run_id.clone() else {
            let runs = remove::runs_in(&client, &t.namespace).await?;
            if runs.is_empty() {
                say!("nothing to tear down: no run of e2e-setup in namespace {}", t.namespace);
                return Ok(state.is_some());
            }
            bail!(
                "e2e-teardown in namespace {} (--existing-namespace) needs --run-id: this checkout recorded no run; \
                 runs there: {}",
                t.namespace,
                runs.join(", ")
            );
        };
        let step = Step::start(format!("run {run_id} in namespace {} (context {})", t.namespace, t.context));
        step.detail("deleting its objects, then waiting until they are gone");
        let removed = remove::delete_run(&client, &t.namespace, &run_id, Duration::from_secs(180)).await?;
        if removed.deleted.is_empty() {
            step.done("nothing to delete; the namespace is left as it was");
        } else {
            step.done(format!("deleted {}; the namespace is left as it was", removed.deleted.join(", ")));
        }
    } else {
        let step = Step::start(format!("namespace {} (context {})", t.namespace, t.context));
        step.detail("deleting, then waiting until it is gone");
        match remove::delete_namespace(&client, &t.namespace, run_id.as_deref(), Duration::from_secs(180)).await? {
            remove::Deleted::Deleted => step.done("deleted"),
            remove::Deleted::Missing => step.done("nothing to delete"),
        }
    }
    Ok(state.is_some() && run_id == recorded)
}

/// `e2e-teardown --stale AGE`: removes the runs on the cluster whose last setup is at least AGE
/// ago (see [`stale`] for how that is decided), in one namespace or in all of them. It never
/// touches this checkout's state files.
pub(crate) async fn teardown_stale(args: &Teardown, state: Option<&SetupState>, age_text: &str) -> Result<()> {
    let age = stale::parse_age(age_text)?;
    let saved = state.filter(|s| s.backend == BackendKind::Kube);
    let Some(context) = args.cluster.context.clone().or_else(|| saved.and_then(|s| s.context.clone())) else {
        bail!("e2e-teardown --stale needs --context CONTEXT: the kubeconfig context of the cluster to clean up");
    };
    let scope = match (args.cluster.namespace.as_deref(), args.all_namespaces) {
        (Some(ns), false) => {
            config::check_dns_label("--namespace", ns)?;
            remove::Scope::Namespace(ns)
        }
        (None, true) => remove::Scope::All,
        (Some(_), true) => bail!("e2e-teardown --stale: pass --namespace N or --all-namespaces, not both"),
        (None, false) => bail!(
            "e2e-teardown --stale needs --namespace N (a Role there is enough) or --all-namespaces (needs the ClusterRole)"
        ),
    };
    let client = e2e_migrations::kube::client(None, Some(&context)).await?;
    let step = Step::start(match scope {
        remove::Scope::Namespace(ns) => {
            format!("setups older than {} in namespace {ns} (context {context})", stale::format_age(age))
        }
        remove::Scope::All => {
            format!("setups older than {} in all namespaces (context {context})", stale::format_age(age))
        }
    });
    let mut found = remove::find(&client, scope, &e2e_migrations::kube::managed_selector()).await?;
    match scope {
        remove::Scope::All => found.extend(remove::find_namespaces(&client).await?),
        remove::Scope::Namespace(ns) => {
            // the namespace itself counts only when it can be read (a Role cannot) and is ours
            let api: Api<Namespace> = Api::all(client.clone());
            if let Ok(Some(n)) = api.get_opt(ns).await {
                let labels = n.metadata.labels.clone().unwrap_or_default();
                if labels.get(e2e_migrations::kube::MANAGED_BY_LABEL).map(String::as_str)
                    == Some(e2e_migrations::kube::MANAGED_BY)
                {
                    found.push(remove::found(stale::Kind::Namespace, &n));
                }
            }
        }
    }
    let (runs, skipped) = stale::group(found);
    let decisions = stale::decide(runs, chrono::Utc::now(), age);
    let stale_runs = decisions.iter().filter(|d| d.verdict == stale::Verdict::Remove).count();
    let plural = if decisions.len() == 1 { "" } else { "s" };
    step.done(format!("{} run{plural}, {stale_runs} stale", decisions.len()));
    for line in stale::render(&decisions, &skipped, age, args.dry_run) {
        say!("  {line}");
    }
    if args.dry_run {
        return Ok(());
    }
    let mut failures = Vec::new();
    let mut removed = 0;
    for d in decisions.iter().filter(|d| d.verdict == stale::Verdict::Remove) {
        let r = &d.run;
        let targets: Vec<&stale::Found> = if r.owns_namespace() {
            r.objects.iter().filter(|o| o.kind == stale::Kind::Namespace).collect()
        } else {
            r.objects.iter().collect()
        };
        let mut outcome = Ok(());
        for o in targets {
            match remove::delete(&client, o, true).await {
                Ok(remove::Outcome::Changed) => {
                    outcome = Err(format!("{} {} changed since it was listed (renewed?)", o.kind.word(), o.name));
                    break;
                }
                Ok(_) => {}
                Err(e) => {
                    failures.push(format!("run {} in namespace {}: {e:#}", r.run_id, r.namespace));
                    outcome = Err("see the error below".to_string());
                    break;
                }
            }
        }
        match outcome {
            Ok(()) => removed += 1,
            Err(why) => say!("  run {} in namespace {}: {why}: the rest kept", r.run_id, r.namespace),
        }
    }
    say!(
        "removed {removed} stale run(s); kept {}; left alone {} object(s) without run labels",
        decisions.len() - stale_runs,
        skipped.len()
    );
    if !failures.is_empty() {
        bail!("e2e-teardown --stale could not remove everything:\n  {}", failures.join("\n  "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {

    #[test]
    fn kubeconfig_lists_pick_the_file_that_defines_the_context() {
        use std::ffi::OsStr;
        let home = PathBuf::from("/h/.kube/config");
        assert_eq!(pick_kubeconfig(None, home.clone(), |_| true), home);
        assert_eq!(pick_kubeconfig(Some(OsStr::new("")), home.clone(), |_| true), home);
        let list = OsStr::new("/a/one:/b/two:/c/three");
        assert_eq!(pick_kubeconfig(Some(list), home.clone(), |p| p == Path::new("/b/two")), PathBuf::from("/b/two"));
        assert_eq!(pick_kubeconfig(Some(list), home, |_| false), PathBuf::from("/a/one"));
    }

    use super::*;

    fn saved(context: &str, namespace: &str) -> SetupState {
        SetupState {
            context: Some(context.into()),
            namespace: Some(namespace.into()),
            owned: true,
            run_id: Some("r1".into()),
            ..SetupState::new(BackendKind::Kube)
        }
    }

    #[test]
    fn kube_needs_context_and_namespace_and_says_which_flag() {
        let e = kube_namespace(None, Some("ns"), None, "e2e-setup").unwrap_err().to_string();
        assert!(e.starts_with("e2e-setup --backend kube needs --context CONTEXT"), "{e}");
        let e = kube_namespace(Some("ctx"), None, None, "e2e-setup").unwrap_err().to_string();
        assert!(e.starts_with("e2e-setup --backend kube needs --namespace NAMESPACE"), "{e}");
        let e = kube_namespace(Some("ctx"), Some("Bad_NS"), None, "e2e-setup").unwrap_err().to_string();
        assert!(e.starts_with("--namespace \"Bad_NS\""), "{e}");
    }

    #[test]
    fn teardown_falls_back_to_what_setup_saved_and_flags_win() {
        let s = saved("lab", "e2e-check");
        assert_eq!(
            kube_namespace(None, None, Some(&s), "e2e-teardown").unwrap(),
            KubeNamespace { context: "lab".into(), namespace: "e2e-check".into() }
        );
        assert_eq!(kube_namespace(None, Some("other"), Some(&s), "e2e-teardown").unwrap().namespace, "other");
    }

    #[test]
    fn dry_run_shows_the_secret_readable_with_the_password_redacted() {
        let t = chrono::Utc::now();
        let run = RunMeta { run_id: "r1".into(), created_at: t, renewed_at: t, created_by: "me".into() };
        let yaml = dry_run_manifests(
            &config::PostgresSettings::default(),
            "e2e",
            Exposure::ClusterIp,
            &run,
            true,
            &Default::default(),
        );
        assert!(yaml.contains("POSTGRES_PASSWORD: <generated>"), "{yaml}");
        assert!(!yaml.contains("\ndata:"), "{yaml}");
    }
}
