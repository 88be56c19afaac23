//! `cargo xtask e2e-setup`: a database with the requested sets applied and partitions rolled.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use chrono::{DateTime, Utc};
use e2e_migrations::lifecycle::cache::CacheRequest;
use e2e_migrations::lifecycle::fault::{fault_point, FaultStep};
use e2e_migrations::lifecycle::local::{self, LocalServer, StartOptions};
use e2e_migrations::lifecycle::record::{self, shell_quote};
use e2e_migrations::lifecycle::{BackendKind, Phase, Saved, SetupState, Workspace};
use e2e_migrations::testdb::Fingerprint;
use e2e_migrations::{migrator, partitions, Options, Project};

use crate::cli_util::{connect, load_project, parse_now, workspace, Step};
use crate::flags::{Backend, Setup};
use crate::kind;

/// Picks the backend: an explicit one; else a URL when given; else the backend of the previous
/// setup (so a second setup, or the test runner's setup script, reuses what is there); else kind
/// when usable; else local.
pub(crate) fn choose_backend(
    requested: Backend,
    has_url: bool,
    previous: Option<BackendKind>,
    kind_unavailable: impl FnOnce() -> Option<String>,
) -> (Backend, Option<String>) {
    match (requested, previous) {
        (Backend::Auto, _) if has_url => (Backend::Url, Some("a database URL was given".to_string())),
        (Backend::Auto, Some(BackendKind::Local)) => (Backend::Local, Some("reusing the previous setup".to_string())),
        (Backend::Auto, Some(BackendKind::Kind)) => (Backend::Kind, Some("reusing the previous setup".to_string())),
        (Backend::Auto, _) => match kind_unavailable() {
            None => (Backend::Kind, Some("kind and a container engine are present".to_string())),
            Some(why) => (Backend::Local, Some(format!("kind is not usable here: {why}"))),
        },
        (other, _) => (other, None),
    }
}

/// The cache entry a new local server may start from: keyed by the sets, every selected
/// migration's checksum and statements, the partition specs and the day (the test templates'
/// fingerprint); `None` when the cache is off.
fn cache_request(
    ws: &Workspace,
    project: &Project,
    sets: &[String],
    now: DateTime<Utc>,
) -> Result<Option<CacheRequest>> {
    let Some(dir) = &ws.cache_dir else {
        return Ok(None);
    };
    let fp = Fingerprint::new(project, sets, now)?;
    let label = format!("sets {} as of {}", fp.sets.join(","), fp.date);
    Ok(Some(CacheRequest { dir: dir.clone(), content: fp.hash(), label }))
}

/// The line that loads the connection settings into a shell, quoted so that any path pastes
/// safely (spaces, quotes, `$(...)`).
pub(crate) fn use_them_line(env_file: &std::path::Path) -> String {
    format!("set -a; . {}; set +a; psql \"$DATABASE_URL\"", shell_quote(&env_file.display().to_string()))
}

impl Setup {
    pub(crate) async fn run(self) -> Result<()> {
        let total = Instant::now();
        let (project, sets) = load_project(&self.sets)?;
        let now = parse_now(self.now.as_deref())?;
        let mut ws = workspace()?;
        ws.connect_timeout = self.connect_timeout;
        let saved = e2e_migrations::lifecycle::read_saved(&ws)?;
        let previous = match &saved {
            Saved::Ours(r) => Some(r.setup.backend),
            _ => None,
        };
        let (backend, why) =
            choose_backend(self.backend, self.database_url.is_some(), previous, kind::unavailable_reason);
        match why {
            Some(why) => eprintln!("backend: {} ({why})", format!("{backend:?}").to_lowercase()),
            None => eprintln!("backend: {}", format!("{backend:?}").to_lowercase()),
        }
        if self.dry_run && matches!(backend, Backend::Local | Backend::Url) {
            bail!("--dry-run is for --backend kind or kube; to see what migrations would run, use `cargo xtask migrate plan`");
        }
        if let (Some(prev @ (BackendKind::Kind | BackendKind::Kube)), Backend::Local | Backend::Url) =
            (previous, backend)
        {
            eprintln!(
                "  note: replacing the record of the {} setup; what it made stays (`cargo xtask e2e-teardown --backend {}` removes it)",
                prev.name(),
                prev.name()
            );
        }
        let mut server: Option<LocalServer> = None;
        let cache = match backend {
            Backend::Local => cache_request(&ws, &project, &sets, now)?,
            _ => None,
        };
        let (mut st, mut client) = match backend {
            Backend::Local => {
                let step = Step::start("local PostgreSQL");
                let s = local::ensure_running(&ws, &StartOptions { cache: cache.clone() }).await?;
                for n in &s.notes {
                    eprintln!("    {n}");
                }
                step.done(format!("{} on 127.0.0.1:{}", s.started.word(), s.local.port));
                let client = connect(&s.url(), self.connect_timeout).await?;
                let st = SetupState {
                    backend: BackendKind::Local,
                    database_url: Some(s.url()),
                    kubeconfig: None,
                    context: None,
                    namespace: None,
                    cluster: None,
                    owned: true,
                    sets: Vec::new(),
                    run_id: None,
                    run_created_at: None,
                    existing_namespace: false,
                };
                server = Some(s);
                (st, client)
            }
            Backend::Url => {
                let Some(url) = self.database_url.clone() else {
                    bail!("--backend url needs --database-url URL (or DATABASE_URL)");
                };
                let step = Step::start("connect");
                let client = connect(&url, self.connect_timeout).await?;
                step.done(e2e_migrations::db::redact(&url));
                let st = SetupState {
                    backend: BackendKind::Url,
                    database_url: Some(url),
                    kubeconfig: None,
                    context: None,
                    namespace: None,
                    cluster: None,
                    owned: false,
                    sets: Vec::new(),
                    run_id: None,
                    run_created_at: None,
                    existing_namespace: false,
                };
                (st, client)
            }
            Backend::Kind | Backend::Kube => match kind::setup(&self, &ws).await? {
                Some(made) => made,
                None => return Ok(()), // dry run: printed the plan
            },
            Backend::Auto => unreachable!("resolved above"),
        };

        let opts = Options { accept_drift: self.accept_drift, lock_timeout: Duration::from_secs(self.lock_timeout) };
        let label = if sets.is_empty() { "all".to_string() } else { sets.join(",") };
        let selection = project.select(&sets)?;
        let step = Step::start(format!("migrations ({label})"));
        let m = migrator::up(&mut client, &project.folder, &selection.migrations, &opts).await?;
        step.done(format!("{} applied, {} already applied", m.applied.len(), m.already_applied));
        for a in &m.applied {
            eprintln!("    applied {} ({} statements, {:.0} ms)", a.name, a.statements, a.duration_ms);
        }
        if let Some(w) = crate::migrate::unknown_warning(&m.unknown, &project.folder.dir) {
            eprintln!("    warning: {w}");
        }
        for f in &m.drift_accepted {
            eprintln!("    warning: accepted drift of {f}");
        }
        fault_point(FaultStep::Migrations);
        let roll_opts = partitions::RollOptions { lock_timeout: opts.lock_timeout, ..Default::default() };
        let p = partitions::roll(&mut client, &selection.partitions, now, &roll_opts).await?;
        eprintln!(
            "  partitions: {} created, {} rows moved from default partitions{}",
            p.created.len(),
            p.moved_rows,
            if p.pruned.is_empty() { String::new() } else { format!(", {} pruned", p.pruned.len()) }
        );
        for n in &p.notes {
            eprintln!("    {n}");
        }
        fault_point(FaultStep::Partitions);
        drop(client);

        // A server made by initdb with exactly these sets applied: keep a copy for cold starts.
        if let (Some(s), Some(req)) = (server.take(), &cache) {
            if s.started == local::Started::Created {
                let step = Step::start("server cache");
                let s = local::store_in_cache(&ws, s, req).await?;
                step.done(format!("stored for the next cold start ({})", req.label));
                st.database_url = Some(s.url());
            }
        }

        st.sets = sets;
        let rec = e2e_migrations::lifecycle::save_setup(&ws, st, Phase::Ready).await?;
        let st = rec.setup;
        let env_file = record::env_file(&ws.state_dir);
        if self.print_env {
            for (k, v) in st.env() {
                println!("{k}={v}");
            }
        } else {
            eprintln!("ready in {:.1} s", total.elapsed().as_secs_f64());
            eprintln!("  connection settings (0600): {}", env_file.display());
            match &st.database_url {
                Some(u) => {
                    eprintln!("  database: {}", e2e_migrations::db::redact(u));
                    eprintln!("  use them:  {}", use_them_line(&env_file));
                    eprintln!("  or:        eval \"$(cargo xtask e2e-setup --print-env)\"");
                }
                None => {
                    // kube: the server is reached through the Kubernetes API, not a host port.
                    let ns = st.namespace.as_deref().unwrap_or("default");
                    let ctx = st.context.as_deref().unwrap_or("CONTEXT");
                    let service = e2e_migrations::kube::instance_name(st.run_id.as_deref().unwrap_or("RUN_ID"));
                    eprintln!("  no host port: the server is reached through a port-forward over the Kubernetes API");
                    eprintln!("  from Rust:  e2e_migrations::kube::Target::from_env() (after: eval \"$(cargo xtask e2e-setup --print-env ...)\")");
                    eprintln!(
                        "  by hand:    kubectl --context {ctx} --namespace {ns} port-forward service/{service} :5432"
                    );
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_prefers_url_then_kind_then_local() {
        assert_eq!(choose_backend(Backend::Auto, true, None, || None).0, Backend::Url);
        assert_eq!(choose_backend(Backend::Auto, false, None, || None).0, Backend::Kind);
        let (b, why) = choose_backend(Backend::Auto, false, None, || Some("no kind binary".into()));
        assert_eq!(b, Backend::Local);
        assert!(why.unwrap().contains("no kind binary"));
        assert_eq!(choose_backend(Backend::Local, true, None, || None).0, Backend::Local);
    }

    #[test]
    fn auto_reuses_the_previous_local_or_kind_setup() {
        let kind_here = || None;
        assert_eq!(choose_backend(Backend::Auto, false, Some(BackendKind::Local), kind_here).0, Backend::Local);
        let no_kind = || Some("no kind".to_string());
        assert_eq!(choose_backend(Backend::Auto, false, Some(BackendKind::Kind), no_kind).0, Backend::Kind);
        // A previous URL or kube setup needs its flags again: auto does not guess them.
        assert_eq!(
            choose_backend(Backend::Auto, false, Some(BackendKind::Kube), || Some("x".into())).0,
            Backend::Local
        );
    }

    #[test]
    fn the_use_them_line_quotes_the_path() {
        assert_eq!(
            use_them_line(std::path::Path::new("/w/target/e2e/connection.env")),
            r#"set -a; . /w/target/e2e/connection.env; set +a; psql "$DATABASE_URL""#
        );
        assert_eq!(
            use_them_line(std::path::Path::new("/my dir/$(touch x)/connection.env")),
            r#"set -a; . '/my dir/$(touch x)/connection.env'; set +a; psql "$DATABASE_URL""#
        );
    }
}
