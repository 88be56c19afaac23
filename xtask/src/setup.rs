//! `cargo xtask e2e-setup`: a database with the requested sets applied and partitions rolled.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use chrono::{DateTime, NaiveDate, Utc};
use e2e_migrations::state::{self, BackendKind, SetupState};
use e2e_migrations::{apply, local, Options};

use crate::flags::{Backend, Setup};
use crate::kind;
use crate::target::{connect, load_project, Step};

/// Parses `--now YYYY-MM-DD` (midday UTC of that date), or the clock.
pub(crate) fn parse_now(now: Option<&str>) -> Result<DateTime<Utc>> {
    match now {
        None => Ok(Utc::now()),
        Some(s) => {
            let d = NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .with_context(|| format!("--now {s:?}: expected YYYY-MM-DD"))?;
            Ok(d.and_hms_opt(12, 0, 0).expect("valid time").and_utc())
        }
    }
}

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

impl Setup {
    pub(crate) async fn run(self) -> Result<()> {
        let total = Instant::now();
        let (project, sets) = load_project(&self.sets)?;
        let now = parse_now(self.now.as_deref())?;
        let root = e2e_migrations::state_root();
        let previous = state::read(&root)?.map(|s| s.backend);
        let (backend, why) =
            choose_backend(self.backend, self.database_url.is_some(), previous, kind::unavailable_reason);
        match why {
            Some(why) => eprintln!("backend: {} ({why})", format!("{backend:?}").to_lowercase()),
            None => eprintln!("backend: {}", format!("{backend:?}").to_lowercase()),
        }
        if self.dry_run && matches!(backend, Backend::Local | Backend::Url) {
            bail!("--dry-run is for --backend kind or kube; to see what migrations would run, use `cargo xtask migrate plan`");
        }
        let (mut st, mut client) = match backend {
            Backend::Local => {
                let step = Step::start("local PostgreSQL");
                let dir = local::default_state_dir();
                let (server, how) = tokio::task::spawn_blocking(move || local::ensure_running(&dir)).await??;
                step.done(format!("{} on 127.0.0.1:{}", how_word(how), server.port));
                let client = connect(&server.url(), self.connect_timeout).await?;
                let st = SetupState {
                    backend: BackendKind::Local,
                    database_url: Some(server.url()),
                    kubeconfig: None,
                    context: None,
                    namespace: None,
                    cluster: None,
                    owned: true,
                    sets: Vec::new(),
                    run_id: None,
                    existing_namespace: false,
                };
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
                    existing_namespace: false,
                };
                (st, client)
            }
            Backend::Kind | Backend::Kube => match kind::setup(&self).await? {
                Some(made) => made,
                None => return Ok(()), // dry run: printed the plan
            },
            Backend::Auto => unreachable!("resolved above"),
        };

        let opts = Options { accept_drift: self.accept_drift, lock_timeout: Duration::from_secs(self.lock_timeout) };
        let label = if sets.is_empty() { "all".to_string() } else { sets.join(",") };
        let step = Step::start(format!("migrations ({label})"));
        let report = apply::migrate_and_roll(&mut client, &project, &sets, &opts, now).await?;
        let m = &report.migrations;
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
        let p = &report.partitions;
        eprintln!(
            "  partitions: {} created, {} rows moved from default partitions{}",
            p.created.len(),
            p.moved_rows,
            if p.pruned.is_empty() { String::new() } else { format!(", {} pruned", p.pruned.len()) }
        );
        for n in &p.notes {
            eprintln!("    {n}");
        }

        st.sets = sets;
        state::write(&root, &st)?;
        if self.print_env {
            for (k, v) in st.env() {
                println!("{k}={v}");
            }
        } else {
            eprintln!("ready in {:.1} s", total.elapsed().as_secs_f64());
            eprintln!("  connection settings (0600): {}", state::env_file(&root).display());
            match &st.database_url {
                Some(u) => {
                    eprintln!("  database: {}", e2e_migrations::db::redact(u));
                    eprintln!(
                        "  use them:  set -a; . {}; set +a; psql \"$DATABASE_URL\"",
                        state::env_file(&root).display()
                    );
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

fn how_word(how: local::Started) -> &'static str {
    match how {
        local::Started::Reused => "reused",
        local::Started::Restarted => "restarted",
        local::Started::Created => "created",
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
    fn now_is_midday_utc_of_the_date() {
        assert_eq!(parse_now(Some("2024-02-29")).unwrap().to_rfc3339(), "2024-02-29T12:00:00+00:00");
        assert!(parse_now(Some("2024-02-30")).unwrap_err().to_string().contains("--now"));
    }
}
