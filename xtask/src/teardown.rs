//! `cargo xtask e2e-teardown`: removes what e2e-setup made in this checkout, and nothing else.

use anyhow::{bail, Result};
use e2e_migrations::lifecycle::{self, local, BackendKind, Saved};

use crate::cli_util::{workspace, Step};
use crate::flags::{Backend, Teardown};
use crate::kind;

/// The backend to tear down (pure): the one asked for, else the one this checkout's record
/// names, else the local backend (which removes only what this checkout's own state folder
/// holds: a copied, unreadable or missing record never leads elsewhere).
pub(crate) fn teardown_backend(requested: Option<Backend>, saved: &Saved) -> Backend {
    match (requested, saved) {
        (Some(b), _) if b != Backend::Auto => b,
        (_, Saved::Ours(r)) => match r.setup.backend {
            BackendKind::Local => Backend::Local,
            BackendKind::Url => Backend::Url,
            BackendKind::Kind => Backend::Kind,
            BackendKind::Kube => Backend::Kube,
        },
        _ => Backend::Local,
    }
}

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
        let backend = teardown_backend(self.backend, &saved);
        let ours = match &saved {
            Saved::Ours(r) => Some(r),
            _ => None,
        };
        let saved_matches = ours.is_some_and(|r| same_backend(r.setup.backend, backend));
        // A local server an earlier setup made stays in the record under another backend.
        let has_local = ours.is_some_and(|r| r.local.is_some());
        match backend {
            Backend::Local => {
                if self.dry_run {
                    eprintln!(
                        "would stop this checkout's local server and remove its files in {}",
                        ws.state_dir.display()
                    );
                    return Ok(());
                }
                return teardown_local(&ws).await;
            }
            Backend::Url => {
                eprintln!("setup used an existing server (--database-url): teardown changes nothing there");
            }
            Backend::Kind | Backend::Kube => {
                let gone = kind::teardown(&self, ours.map(|r| &r.setup).filter(|_| saved_matches), &ws).await?;
                if self.dry_run || self.keep {
                    return Ok(());
                }
                if !gone && saved_matches {
                    // another namespace or run than the saved one: the record still names what it made
                    return Ok(());
                }
            }
            Backend::Auto => unreachable!("resolved above"),
        }
        if has_local && !self.dry_run {
            teardown_local(&ws).await?;
        }
        if saved_matches && !self.dry_run {
            lifecycle::forget(&ws).await?;
        }
        Ok(())
    }
}

async fn teardown_local(ws: &lifecycle::Workspace) -> Result<()> {
    let step = Step::start("local PostgreSQL");
    let report = local::teardown(ws).await?;
    for n in &report.notes {
        eprintln!("    {n}");
    }
    step.done(if report.found { "stopped and removed" } else { "nothing to remove" });
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn teardown_never_follows_a_record_made_elsewhere_or_unreadable() {
        let foreign = Saved::Unreadable { reason: "EOF".into() };
        assert_eq!(teardown_backend(None, &foreign), Backend::Local);
        assert_eq!(teardown_backend(None, &Saved::Missing), Backend::Local);
        assert_eq!(teardown_backend(Some(Backend::Kube), &Saved::Missing), Backend::Kube);
    }
}
