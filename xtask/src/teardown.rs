//! `cargo xtask e2e-teardown`: removes what e2e-setup made in this checkout, and nothing else.

use anyhow::{bail, Result};
use e2e_migrations::lifecycle::record::{self, DataPlace};
use e2e_migrations::lifecycle::{self, local, Saved};

use crate::cli_util::{workspace, Step};
use crate::flags::{Backend, Teardown};
use crate::progress::say;
use crate::{follow, kind};

impl Teardown {
    pub(crate) async fn run(self) -> Result<()> {
        let ws = workspace()?;
        let saved = lifecycle::read_saved(&ws)?;
        if let Some(age) = &self.stale {
            // a cleanup of the cluster: this checkout's own state is left as it is
            if !matches!(self.backend, None | Some(Backend::Kube)) {
                bail!("--stale is for --backend kube (a shared cluster)");
            }
            let setup = match &saved {
                Saved::Ours(r) => Some(&r.setup),
                _ => None,
            };
            return kind::teardown_stale(&self, setup, age).await;
        }
        let file = record::record_file(&ws.state_dir);
        let choice =
            follow::choose_teardown(self.backend, self.cluster.context.is_some(), &saved, &file, local_files(&ws));
        let (backend, recorded) = match choice {
            follow::TeardownChoice::Nothing(says) => {
                say!("{says}");
                return Ok(());
            }
            follow::TeardownChoice::Act { backend, recorded } => (backend, recorded),
        };
        let ours = match &saved {
            Saved::Ours(r) => Some(r),
            _ => None,
        };
        // A local server an earlier setup made stays in the record under another backend.
        let has_local = recorded && ours.is_some_and(|r| r.local.is_some());
        match backend {
            Backend::Local => {
                if self.dry_run {
                    say!("would stop this checkout's local server and remove its files in {}", ws.state_dir.display());
                    return Ok(());
                }
                return teardown_local(&ws).await;
            }
            Backend::Url => {
                say!("setup used an existing server (--database-url): teardown changes nothing there");
            }
            Backend::Kind | Backend::Kube => {
                let state = ours.map(|r| &r.setup).filter(|_| recorded);
                let gone = kind::teardown(&self, backend, state, &ws).await?;
                if self.dry_run || self.keep {
                    return Ok(());
                }
                if !gone && recorded {
                    // another namespace or run than the recorded one: the record still names what it made
                    return Ok(());
                }
            }
            Backend::Auto => unreachable!("resolved above"),
        }
        if has_local && !self.dry_run {
            teardown_local(&ws).await?;
        }
        if recorded && !self.dry_run {
            lifecycle::forget(&ws).await?;
        }
        Ok(())
    }
}

/// Whether this checkout's state folder holds a local server's files (with or without a record).
fn local_files(ws: &lifecycle::Workspace) -> bool {
    let Ok(here) = std::fs::canonicalize(&ws.state_dir) else {
        return false;
    };
    [DataPlace::State, DataPlace::Temp].into_iter().any(|p| local::Layout::new(&here, p).root.exists())
}

async fn teardown_local(ws: &lifecycle::Workspace) -> Result<()> {
    let step = Step::start("local PostgreSQL");
    let report = local::teardown(ws).await?;
    for n in &report.notes {
        say!("    {n}");
    }
    step.done(match (report.found, report.stopped) {
        (_, true) => "stopped and removed",
        (true, false) => "removed (no server of this checkout was running)",
        (false, false) => "nothing to remove",
    });
    Ok(())
}
