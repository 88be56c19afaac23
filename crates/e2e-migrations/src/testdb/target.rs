//! Which server test databases go to: the choice is pure, the rest a thin layer.

use super::*;

/// Replaces the database of a `postgres://` URL (or a `key=value` connection string) (pure).
pub fn swap_database(url: &str, database: &str) -> Result<String> {
    if let Some((scheme, rest)) = url.split_once("://") {
        if scheme != "postgres" && scheme != "postgresql" {
            return Err(Error::Other(format!(
                "database URL {}: expected postgres:// or postgresql://",
                db::redact(url)
            )));
        }
        let (before_query, query) = match rest.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (rest, None),
        };
        // The authority ends at the first '/' after the last '@' (passwords may hold '/').
        let auth_start = before_query.rfind('@').map(|i| i + 1).unwrap_or(0);
        let authority_end = before_query[auth_start..].find('/').map(|i| i + auth_start).unwrap_or(before_query.len());
        let mut out = format!("{scheme}://{}/{database}", &before_query[..authority_end]);
        if let Some(q) = query {
            let kept: Vec<&str> = q.split('&').filter(|kv| !kv.starts_with("dbname=")).collect();
            if !kept.is_empty() {
                out.push('?');
                out.push_str(&kept.join("&"));
            }
        }
        return Ok(out);
    }
    if url.contains('=') {
        let mut parts: Vec<String> =
            url.split_whitespace().filter(|kv| !kv.starts_with("dbname=")).map(str::to_string).collect();
        parts.push(format!("dbname={database}"));
        return Ok(parts.join(" "));
    }
    Err(Error::Other(format!("database URL {:?}: expected postgres://... or key=value pairs", db::redact(url))))
}

/// Where the test databases go, as chosen from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetChoice {
    /// A server given by URL (from `DATABASE_URL` or the state e2e-setup left).
    Url {
        /// Any database URL on that server.
        url: String,
        /// Where it came from, for messages.
        from: String,
    },
    /// The local default server (started on demand).
    Local,
    /// A namespace of a cluster (`e2e-setup --backend kube`), reached through a local
    /// port-forward listener.
    #[cfg(feature = "kube")]
    Kube(crate::kube::Target),
}

/// Picks the server (pure): `DATABASE_URL`, else what e2e-setup left, else the local default.
/// A kube setup without a host URL is an error that says what to do.
pub fn choose_target(env_url: Option<String>, setup: Option<&SetupState>) -> Result<TargetChoice> {
    if let Some(url) = env_url.filter(|u| !u.trim().is_empty()) {
        return Ok(TargetChoice::Url { url, from: "DATABASE_URL".into() });
    }
    match setup {
        Some(s) => match &s.database_url {
            Some(url) => Ok(TargetChoice::Url { url: url.clone(), from: format!("the {:?} setup in {}", s.backend, state::state_file(&crate::state_root()).display()) }),
            #[cfg(feature = "kube")]
            None if s.backend == BackendKind::Kube && s.namespace.is_some() => Ok(TargetChoice::Kube(crate::kube::Target {
                kubeconfig: s.kubeconfig.clone(),
                context: s.context.clone(),
                namespace: s.namespace.clone().expect("checked"),
                run_id: s.run_id.clone(),
            })),
            None if s.backend == BackendKind::Kube || s.backend == BackendKind::Kind => Err(Error::Other(format!(
                "e2e-setup used the {:?} backend, which leaves no URL reachable from this host; test databases need one: \
                 port-forward PostgreSQL (e.g. kubectl -n {} port-forward svc/postgres-{} :5432) and set DATABASE_URL",
                s.backend,
                s.namespace.as_deref().unwrap_or("<namespace>"),
                s.run_id.as_deref().unwrap_or("<run id>")
            ))),
            None => Err(Error::Other(format!("the setup state in {} has no database URL; rerun cargo xtask e2e-setup", state::state_file(&crate::state_root()).display()))),
        },
        None => Ok(TargetChoice::Local),
    }
}

/// A server that test databases are made on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Any database URL on the server; others are derived by swapping the database name.
    pub url: String,
}

impl Target {
    /// A server by URL (the role needs `CREATEDB`).
    pub fn url(url: impl Into<String>) -> Target {
        Target { url: url.into() }
    }

    /// `DATABASE_URL`, else the state `cargo xtask e2e-setup` left, else the local default
    /// server (started if needed, shared by every test binary).
    pub fn from_env() -> Result<Target> {
        let setup = state::read(&crate::state_root())?;
        match choose_target(std::env::var("DATABASE_URL").ok(), setup.as_ref())? {
            TargetChoice::Url { url, .. } => Ok(Target { url }),
            TargetChoice::Local => {
                let (server, _) = local::ensure_running(&local::default_state_dir())?;
                Ok(Target { url: server.url() })
            }
            #[cfg(feature = "kube")]
            TargetChoice::Kube(kube) => Ok(Target { url: kube_forward_url(kube)? }),
        }
    }

    /// The URL of `database` on this server.
    pub fn url_for(&self, database: &str) -> Result<String> {
        swap_database(&self.url, database)
    }
}

/// The URL of a local port-forward listener to the cluster's PostgreSQL, started once per
/// namespace on the engine's runtime and kept for the life of the process.
#[cfg(feature = "kube")]
pub(super) fn kube_forward_url(target: crate::kube::Target) -> Result<String> {
    static FORWARDS: OnceLock<Mutex<HashMap<String, crate::kube::LocalForward>>> = OnceLock::new();
    let key = format!("{:?}|{:?}|{}|{:?}", target.kubeconfig, target.context, target.namespace, target.run_id);
    let mut forwards = FORWARDS.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
    if let Some(f) = forwards.get(&key) {
        return Ok(f.url.clone());
    }
    // A thread of its own: blocking on the engine from inside a caller's runtime would panic.
    let handle = engine().rt.handle().clone();
    let forward = std::thread::spawn(move || handle.block_on(target.local_forward()))
        .join()
        .map_err(|_| Error::Other("starting the port-forward panicked".to_string()))??;
    let url = forward.url.clone();
    forwards.insert(key, forward);
    Ok(url)
}
