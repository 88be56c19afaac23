//! The Kind and existing-cluster backends (`--backend kind|kube`): the cluster, PostgreSQL in it,
//! and the connection the migrations run over.
//!
//! - [`config`]: `e2e.toml` and the typed Kind cluster config;
//! - [`manifests`]: the typed Kubernetes objects;
//! - [`plan`]: the ordered commands and manifests that `--dry-run` prints (pure);
//! - [`cluster`]: the `kind` CLI, the availability probe and the reuse/ownership decisions;
//! - [`deploy`]: server-side apply and the readiness watch;
//! - [`forward`]: the NodePort URL or the port-forward;
//! - [`share`]: how checkouts on one machine share a cluster (pure).

pub(crate) mod cluster;
pub(crate) mod config;
pub(crate) mod deploy;
pub(crate) mod forward;
pub(crate) mod manifests;
pub(crate) mod plan;
pub(crate) mod share;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use e2e_migrations::kube::Credentials;
use e2e_migrations::lifecycle::{BackendKind, Saved, SetupState, Workspace};
use k8s_openapi::api::core::v1::Node;
use kube::api::ListParams;
use kube::{Api, Client};
use xshell::Shell;

use self::cluster::{Action, Marker, Paths, TeardownAction};
use self::config::{E2eConfig, KindCluster, CONFIG_FILE, CONFIG_HASH_LABEL, OWNER_LABEL, OWNER_VALUE};
use self::manifests::{Exposure, Manifests};
use crate::flags::{Setup, Teardown};
use crate::target::Step;

/// Why kind cannot serve here, or `None` when kind and a running container engine are present.
pub(crate) fn unavailable_reason() -> Option<String> {
    let sh = Shell::new().ok()?;
    cluster::availability(&cluster::probe(&sh)).err()
}

/// The root of the checkout the command runs in (not the one this binary was built in).
fn workspace_root() -> PathBuf {
    Workspace::current().map(|w| w.root).unwrap_or_else(|_| PathBuf::from("."))
}

fn shell() -> Result<Shell> {
    let sh = Shell::new().context("cannot set up a shell for kind")?;
    sh.change_dir(workspace_root());
    Ok(sh)
}

fn load_config(explicit: Option<&Path>) -> Result<E2eConfig> {
    let (config, path) = E2eConfig::load(explicit, &workspace_root().join(CONFIG_FILE))?;
    if let Some(p) = path {
        eprintln!("  settings: {}", p.display());
    }
    Ok(config)
}

/// Where `--backend kube` works: the context and namespace (both required, so that a shared
/// cluster is never touched by accident through whatever context is current).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KubeTarget {
    /// The kubeconfig context.
    pub(crate) context: String,
    /// The namespace setup owns.
    pub(crate) namespace: String,
}

/// Resolves `--context` and `--namespace`, falling back to what setup saved (pure).
pub(crate) fn kube_target(
    context: Option<&str>,
    namespace: Option<&str>,
    saved: Option<&SetupState>,
    cmd: &str,
) -> Result<KubeTarget> {
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
    Ok(KubeTarget { context, namespace })
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
fn dry_run_manifests(pg: &config::PostgresSettings, namespace: &str, exposure: Exposure) -> String {
    let mut m = Manifests::new(pg, namespace, "<generated>", exposure);
    let data = m.secret.data.take().unwrap_or_default();
    m.secret.string_data =
        Some(data.into_iter().map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned())).collect());
    m.to_yaml()
}

/// Creates or reuses the cluster, deploys PostgreSQL and connects to it.
/// Returns `None` after a dry run (which only prints).
pub(crate) async fn setup(args: &Setup, ws: &Workspace) -> Result<Option<(SetupState, tokio_postgres::Client)>> {
    let config = load_config(args.cluster.config.as_deref())?;
    match args.backend {
        crate::flags::Backend::Kube => setup_kube(args, &config).await,
        _ => setup_kind(args, &config, ws).await,
    }
}

async fn setup_kube(args: &Setup, config: &E2eConfig) -> Result<Option<(SetupState, tokio_postgres::Client)>> {
    let t = kube_target(args.cluster.context.as_deref(), args.cluster.namespace.as_deref(), None, "e2e-setup")?;
    let pg = &config.postgres;
    if args.dry_run {
        let yaml = dry_run_manifests(pg, &t.namespace, Exposure::ClusterIp);
        let d = plan::Deploy {
            manifests_yaml: &yaml,
            target: format!("context {}, namespace {}", t.context, t.namespace),
            namespace: &t.namespace,
            timeout_s: pg.ready_timeout_s,
            connect: format!(
                "port-forward to the ready pod's port {} over the API server",
                e2e_migrations::kube::POSTGRES_PORT
            ),
            sets: sets_label(args),
        };
        print!("{}", plan::render(&plan::kube_setup(&d)));
        return Ok(None);
    }
    let step = Step::start(format!("cluster (context {})", t.context));
    let client = e2e_migrations::kube::client(None, Some(&t.context)).await?;
    let version = client
        .apiserver_version()
        .await
        .with_context(|| format!("reaching the API server of context {} (--context)", t.context))?;
    step.done(format!("Kubernetes {}.{}", version.major, version.minor));
    let step = Step::start(format!("PostgreSQL in namespace {}", t.namespace));
    let d = deploy::Deploy {
        client: client.clone(),
        namespace: &t.namespace,
        namespace_flag: "--namespace",
        pg,
        exposure: Exposure::ClusterIp,
    };
    let deployed = deploy::deploy(&d).await?;
    step.done(format!(
        "pod {} ready{}",
        deployed.pod,
        if deployed.created_namespace { " (namespace created)" } else { "" }
    ));
    let step = Step::start("connect");
    let creds =
        Credentials { user: pg.user.clone(), password: deployed.password.clone(), database: pg.database.clone() };
    let pg_client = forward::connect_port_forward(&client, &t.namespace, &deployed.pod, &creds).await?;
    step.done(format!("port-forward to pod {}", deployed.pod));
    let st = SetupState {
        backend: BackendKind::Kube,
        database_url: None,
        kubeconfig: Some(user_kubeconfig(&t.context)),
        context: Some(t.context),
        namespace: Some(t.namespace),
        cluster: None,
        owned: true,
        sets: Vec::new(),
    };
    Ok(Some((st, pg_client)))
}

/// Asks the cluster (through our kubeconfig) whether its node carries our owner label.
async fn marker(kubeconfig: &Path, name: &str) -> Marker {
    let ask = async {
        let client: Client = e2e_migrations::kube::client(Some(kubeconfig), Some(&format!("kind-{name}"))).await?;
        let nodes: Api<Node> = Api::all(client);
        let list = nodes.list(&ListParams::default()).await.map_err(|e| e2e_migrations::Error::Other(e.to_string()))?;
        Ok::<_, e2e_migrations::Error>(list.items)
    };
    let nodes = match tokio::time::timeout(Duration::from_secs(10), ask).await {
        Ok(Ok(nodes)) => nodes,
        Ok(Err(e)) => return Marker::Unreachable(e.to_string()),
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

fn saved_owns_cluster(saved: Option<&SetupState>, name: &str) -> bool {
    saved.is_some_and(|s| s.backend == BackendKind::Kind && s.owned && s.cluster.as_deref() == Some(name))
}

async fn setup_kind(
    args: &Setup,
    config: &E2eConfig,
    ws: &Workspace,
) -> Result<Option<(SetupState, tokio_postgres::Client)>> {
    let sh = shell()?;
    let name = &config.cluster.name;
    let pg = &config.postgres;
    let namespace = args.cluster.namespace.clone().unwrap_or_else(|| pg.namespace.clone());
    config::check_dns_label("--namespace", &namespace)?;
    let kind_config = KindCluster::from_config(config);
    let config_yaml = kind_config.to_yaml();
    let paths = Paths::new(&ws.state_dir, name);
    let exposure = Exposure::NodePort(pg.node_port);

    if args.dry_run {
        let engine = cluster::availability(&cluster::probe(&sh)).unwrap_or(plan::Engine::Docker);
        let yaml = dry_run_manifests(pg, &namespace, exposure);
        let k = plan::KindSetup {
            cluster: name,
            config_path: &paths.config,
            config_yaml: &config_yaml,
            kubeconfig: &paths.kubeconfig,
            engine,
            image: &pg.image,
            archive: &paths.archive,
        };
        let d = plan::Deploy {
            manifests_yaml: &yaml,
            target: format!("context kind-{name}, namespace {namespace}"),
            namespace: &namespace,
            timeout_s: pg.ready_timeout_s,
            connect: forward::node_port_url(&pg.user, "***", pg.host_port, &pg.database),
            sets: sets_label(args),
        };
        print!("{}", plan::render(&plan::kind_setup(&k, &d)));
        return Ok(None);
    }

    let step = Step::start("kind and container engine");
    let engine = cluster::availability(&cluster::probe(&sh)).map_err(|e| anyhow::anyhow!("--backend kind: {e}"))?;
    step.done(engine.program());

    let step = Step::start(format!("cluster {name}"));
    let existing = cluster::list_clusters(&sh)?;
    let marker = if existing.iter().any(|c| c == name) {
        cluster::write_kubeconfig(&sh, name, &paths.kubeconfig)?;
        marker(&paths.kubeconfig, name).await
    } else {
        Marker::Unreachable("no such cluster".to_string())
    };
    let saved = match e2e_migrations::lifecycle::read_saved(ws)? {
        Saved::Ours(r) => Some(r.setup),
        _ => None,
    };
    let action = cluster::decide(
        name,
        &existing,
        &marker,
        saved_owns_cluster(saved.as_ref(), name),
        args.recreate,
        &kind_config.hash(),
    );
    let fresh = match &action {
        Action::Refuse(e) => bail!(e.clone()),
        Action::Reuse => false,
        Action::Create => {
            cluster::create(&sh, name, &paths, &config_yaml)?;
            true
        }
        Action::Recreate(why) => {
            eprintln!("  recreating cluster {name}: {why}");
            cluster::delete(&sh, name, &paths.kubeconfig)?;
            cluster::create(&sh, name, &paths, &config_yaml)?;
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
        let what = cluster::load_image(&sh, engine, &pg.image, name, &paths, fresh)?;
        step.done(what);
        let step = Step::start(format!("PostgreSQL in namespace {namespace}"));
        let client = e2e_migrations::kube::client(Some(&paths.kubeconfig), Some(&format!("kind-{name}"))).await?;
        let flag = if args.cluster.namespace.is_some() { "--namespace" } else { "postgres.namespace in e2e.toml" };
        let d = deploy::Deploy { client, namespace: &namespace, namespace_flag: flag, pg, exposure };
        let deployed = deploy::deploy(&d).await?;
        step.done(format!("pod {} ready", deployed.pod));
        let step = Step::start("connect");
        let url = forward::node_port_url(&pg.user, &deployed.password, pg.host_port, &pg.database);
        let client = forward::connect_url(&url, Duration::from_secs(20)).await?;
        step.done(format!("127.0.0.1:{} (NodePort {})", pg.host_port, pg.node_port));
        Ok::<_, anyhow::Error>((url, client))
    }
    .await;
    let (url, client) = match result {
        Ok(r) => r,
        Err(e) => {
            let logs = cluster::export_logs(&sh, name, &paths.dir);
            return Err(e.context(format!("setup of cluster {name} failed{logs}")));
        }
    };
    let st = SetupState {
        backend: BackendKind::Kind,
        database_url: Some(url),
        kubeconfig: Some(paths.kubeconfig.clone()),
        context: Some(format!("kind-{name}")),
        namespace: Some(namespace),
        cluster: Some(name.clone()),
        owned: true,
        sets: Vec::new(),
    };
    Ok(Some((st, client)))
}

/// Deletes what setup made in a cluster.
pub(crate) async fn teardown(args: &Teardown, state: Option<&SetupState>, ws: &Workspace) -> Result<()> {
    let backend = match (args.backend, state) {
        (Some(b), _) => b,
        (None, Some(s)) if s.backend == BackendKind::Kube => crate::flags::Backend::Kube,
        _ => crate::flags::Backend::Kind,
    };
    if backend == crate::flags::Backend::Kube {
        return teardown_kube(args, state).await;
    }
    let config = load_config(args.cluster.config.as_deref())?;
    let name = state.and_then(|s| s.cluster.clone()).unwrap_or_else(|| config.cluster.name.clone());
    let paths = Paths::new(&ws.state_dir, &name);
    if args.dry_run {
        print!("{}", plan::render(&plan::kind_teardown(&name, &paths.kubeconfig)));
        return Ok(());
    }
    if args.keep {
        eprintln!(
            "keeping Kind cluster {name} (--keep / KEEP_CLUSTER=true); `cargo xtask e2e-teardown` deletes it later"
        );
        return Ok(());
    }
    let sh = shell()?;
    if let Err(why) = cluster::availability(&cluster::probe(&sh)) {
        if saved_owns_cluster(state, &name) {
            bail!("--backend kind: cannot delete cluster {name}: {why}");
        }
        eprintln!("nothing to tear down: no Kind cluster can exist here ({why})");
        return Ok(());
    }
    let step = Step::start(format!("cluster {name}"));
    let existing = cluster::list_clusters(&sh)?;
    let marker = if existing.iter().any(|c| c == &name) {
        cluster::write_kubeconfig(&sh, &name, &paths.kubeconfig)?;
        marker(&paths.kubeconfig, &name).await
    } else {
        Marker::Unreachable("no such cluster".to_string())
    };
    match cluster::decide_teardown(&name, &existing, &marker, saved_owns_cluster(state, &name)) {
        TeardownAction::Delete => {
            cluster::delete(&sh, &name, &paths.kubeconfig)?;
            for f in [&paths.kubeconfig, &paths.config, &paths.loaded_image] {
                let _ = std::fs::remove_file(f);
            }
            step.done("deleted");
        }
        TeardownAction::Nothing(why) => step.done(format!("nothing to delete: {why}")),
        TeardownAction::Refuse(e) => bail!(e),
    }
    Ok(())
}

async fn teardown_kube(args: &Teardown, state: Option<&SetupState>) -> Result<()> {
    let t = kube_target(args.cluster.context.as_deref(), args.cluster.namespace.as_deref(), state, "e2e-teardown")?;
    if args.dry_run {
        print!("{}", plan::render(&plan::kube_teardown(&format!("context {}", t.context), &t.namespace)));
        return Ok(());
    }
    if args.keep {
        eprintln!("keeping namespace {} (--keep / KEEP_CLUSTER=true)", t.namespace);
        return Ok(());
    }
    let step = Step::start(format!("namespace {} (context {})", t.namespace, t.context));
    let client = e2e_migrations::kube::client(None, Some(&t.context)).await?;
    let started = Instant::now();
    match deploy::delete_namespace(&client, &t.namespace, Duration::from_secs(180)).await? {
        deploy::Deleted::Deleted => step.done(format!("deleted (gone after {:.0} s)", started.elapsed().as_secs_f64())),
        deploy::Deleted::Missing => step.done("nothing to delete"),
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
            backend: BackendKind::Kube,
            database_url: None,
            kubeconfig: None,
            context: Some(context.into()),
            namespace: Some(namespace.into()),
            cluster: None,
            owned: true,
            sets: vec![],
        }
    }

    #[test]
    fn kube_needs_context_and_namespace_and_says_which_flag() {
        let e = kube_target(None, Some("ns"), None, "e2e-setup").unwrap_err().to_string();
        assert!(e.starts_with("e2e-setup --backend kube needs --context CONTEXT"), "{e}");
        let e = kube_target(Some("ctx"), None, None, "e2e-setup").unwrap_err().to_string();
        assert!(e.starts_with("e2e-setup --backend kube needs --namespace NAMESPACE"), "{e}");
        let e = kube_target(Some("ctx"), Some("Bad_NS"), None, "e2e-setup").unwrap_err().to_string();
        assert!(e.starts_with("--namespace \"Bad_NS\""), "{e}");
    }

    #[test]
    fn teardown_falls_back_to_what_setup_saved_and_flags_win() {
        let s = saved("lab", "e2e-check");
        assert_eq!(
            kube_target(None, None, Some(&s), "e2e-teardown").unwrap(),
            KubeTarget { context: "lab".into(), namespace: "e2e-check".into() }
        );
        assert_eq!(kube_target(None, Some("other"), Some(&s), "e2e-teardown").unwrap().namespace, "other");
    }

    #[test]
    fn dry_run_shows_the_secret_readable_with_the_password_redacted() {
        let yaml = dry_run_manifests(&config::PostgresSettings::default(), "e2e", Exposure::ClusterIp);
        assert!(yaml.contains("POSTGRES_PASSWORD: <generated>"), "{yaml}");
        assert!(!yaml.contains("\ndata:"), "{yaml}");
    }
}
