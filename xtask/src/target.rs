//! Where a command's database is, and timed progress lines on stderr.

use std::time::Instant;

use anyhow::{Context, Result};
use e2e_migrations::{local, state, Project};

use crate::flags::SetArgs;

/// One step of a command: prints `what ... (N ms)` on stderr when done.
pub(crate) struct Step {
    what: String,
    start: Instant,
}

impl Step {
    /// Starts timing a step.
    pub(crate) fn start(what: impl Into<String>) -> Step {
        Step { what: what.into(), start: Instant::now() }
    }

    /// Prints the step with its outcome and time.
    pub(crate) fn done(self, outcome: impl std::fmt::Display) {
        let ms = self.start.elapsed().as_secs_f64() * 1000.0;
        let outcome = outcome.to_string();
        if outcome.is_empty() {
            eprintln!("  {} ({ms:.0} ms)", self.what);
        } else {
            eprintln!("  {}: {outcome} ({ms:.0} ms)", self.what);
        }
    }
}

/// Loads and validates the migrations folder and the requested sets (before any database).
pub(crate) fn load_project(args: &SetArgs) -> Result<(Project, Vec<String>)> {
    let project = match &args.migrations_dir {
        Some(d) => Project::load(d),
        None => Project::load(&e2e_migrations::bundled_migrations_dir()),
    }
    .context("invalid migrations")?;
    let sets = match &args.sets {
        Some(s) => e2e_migrations::sets::parse_set_list(s)?,
        None => Vec::new(),
    };
    let selection = project.select(&sets)?;
    for w in &selection.warnings {
        eprintln!("{w}");
    }
    Ok((project, sets))
}

/// A database URL for `migrate` and `partitions`, and the port-forward behind it when the
/// server is in a cluster without a host port (kept alive while the command runs).
pub(crate) struct Resolved {
    /// The URL.
    pub url: String,
    _forward: Option<e2e_migrations::kube::LocalForward>,
}

/// The URL for `migrate` and `partitions`: the flag or `DATABASE_URL`, else what e2e-setup left
/// (through a port-forward for `--backend kube`), else the local default (started if needed).
pub(crate) async fn resolve_url(explicit: Option<&str>) -> Result<Resolved> {
    if let Some(u) = explicit {
        return Ok(Resolved { url: u.to_string(), _forward: None });
    }
    let root = e2e_migrations::state_root();
    if let Some(s) = state::read(&root)? {
        if let Some(u) = s.database_url {
            return Ok(Resolved { url: u, _forward: None });
        }
        let Some(namespace) = s.namespace else {
            anyhow::bail!(
                "{} names no database URL and no namespace; rerun e2e-setup",
                state::state_file(&root).display()
            );
        };
        let step = Step::start(format!("port-forward to namespace {namespace}"));
        let target =
            e2e_migrations::kube::Target { kubeconfig: s.kubeconfig, context: s.context, namespace, run_id: s.run_id };
        let forward = target.local_forward().await?;
        step.done(format!("127.0.0.1:{}", forward.addr.port()));
        return Ok(Resolved { url: forward.url.clone(), _forward: Some(forward) });
    }
    let step = Step::start("local PostgreSQL");
    let (st, how) = tokio::task::spawn_blocking(|| local::ensure_running(&local::default_state_dir())).await??;
    step.done(format!("{how:?} on 127.0.0.1:{}", st.port).to_lowercase());
    Ok(Resolved { url: st.url(), _forward: None })
}

/// Connects within `timeout`, saying where (without the password) if it fails.
pub(crate) async fn connect(url: &str, timeout: std::time::Duration) -> Result<tokio_postgres::Client> {
    Ok(e2e_migrations::db::connect_within(url, timeout).await?)
}
