//! `cargo xtask e2e-teardown`: removes what e2e-setup made, and nothing else.

use anyhow::{bail, Result};
use e2e_migrations::local;
use e2e_migrations::state::{self, BackendKind};

use crate::flags::{Backend, Teardown};
use crate::kind;
use crate::target::Step;

impl Teardown {
    pub(crate) async fn run(self) -> Result<()> {
        let root = e2e_migrations::state_root();
        let saved = state::read(&root)?;
        if let Some(age) = &self.stale {
            // a cleanup of the cluster: this checkout's own state is left as it is
            if !matches!(self.backend, None | Some(Backend::Kube)) {
                bail!("--stale is for --backend kube (a shared cluster)");
            }
            return kind::teardown_stale(&self, saved.as_ref(), age).await;
        }
        let backend = match (self.backend, &saved) {
            (Some(b), _) if b != Backend::Auto => b,
            (_, Some(s)) => match s.backend {
                BackendKind::Local => Backend::Local,
                BackendKind::Url => Backend::Url,
                BackendKind::Kind => Backend::Kind,
                BackendKind::Kube => Backend::Kube,
            },
            _ => Backend::Local,
        };
        let saved_matches = saved.as_ref().map(|s| same_backend(s.backend, backend)).unwrap_or(false);
        match backend {
            Backend::Local => {
                if self.dry_run {
                    eprintln!("would stop the local server and remove {}", local::default_state_dir().display());
                    return Ok(());
                }
                let step = Step::start("local PostgreSQL");
                let dir = local::default_state_dir();
                let removed = tokio::task::spawn_blocking(move || local::teardown(&dir)).await??;
                step.done(if removed { "stopped and removed" } else { "nothing to remove" });
            }
            Backend::Url => {
                eprintln!("setup used an existing server (--database-url): teardown changes nothing there");
            }
            Backend::Kind | Backend::Kube => {
                kind::teardown(&self, saved.as_ref().filter(|_| saved_matches)).await?;
                if self.dry_run || self.keep {
                    return Ok(());
                }
            }
            Backend::Auto => unreachable!("resolved above"),
        }
        if saved_matches && !self.dry_run {
            state::remove(&root)?;
        }
        Ok(())
    }
}

fn same_backend(saved: BackendKind, b: Backend) -> bool {
    matches!(
        (saved, b),
        (BackendKind::Local, Backend::Local)
            | (BackendKind::Url, Backend::Url)
            | (BackendKind::Kind, Backend::Kind)
            | (BackendKind::Kube, Backend::Kube)
    )
}
