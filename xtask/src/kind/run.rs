//! A setup's identity on a cluster: the run id and its creation time, kept in the state folder
//! (`run.json`) from the first setup until teardown, and who ran it (a CI job, else the user).
//!
//! The record is written before anything is made on the cluster, so a setup that fails or is
//! killed half-way is continued by the next one under the same run id instead of leaving objects
//! that belong to nobody.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The record's file in the state folder.
pub(crate) const RUN_FILE: &str = "run.json";

/// The run: its id and when its first setup happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RunRecord {
    /// The run id (see `e2e_migrations::kube::check_run_id`).
    pub(crate) run_id: String,
    /// The first setup of the run.
    pub(crate) created_at: DateTime<Utc>,
}

fn file(root: &Path) -> PathBuf {
    root.join(RUN_FILE)
}

/// The run recorded in `root`, if any.
pub(crate) fn read(root: &Path) -> Result<Option<RunRecord>> {
    let rec: Option<RunRecord> = e2e_migrations::state::read_json(&file(root))?;
    if let Some(r) = &rec {
        e2e_migrations::kube::check_run_id(&r.run_id).with_context(|| format!("{}", file(root).display()))?;
    }
    Ok(rec)
}

/// The recorded run, else a new one (recorded before it is returned).
pub(crate) fn load_or_create(root: &Path, now: DateTime<Utc>) -> Result<RunRecord> {
    if let Some(r) = read(root)? {
        return Ok(r);
    }
    let rec = RunRecord { run_id: generate_run_id()?, created_at: now };
    let json = serde_json::to_vec_pretty(&rec).expect("serialisable");
    e2e_migrations::state::write_private(&file(root), &json)?;
    Ok(rec)
}

/// Forgets the run (after teardown removed its objects).
pub(crate) fn remove(root: &Path) -> Result<()> {
    match std::fs::remove_file(file(root)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", file(root).display())),
    }
}

/// A new run id: 8 hex digits from the OS's randomness (unique enough among the runs of one
/// namespace, and short enough for names).
pub(crate) fn generate_run_id() -> Result<String> {
    let mut bytes = [0u8; 4];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness from the OS for the run id: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Who runs setup, for the `e2e-migrations/created-by` annotation (pure over `env`): `E2E_OWNER`
/// when set; else the CI job's URL (GitHub Actions, GitLab CI, Jenkins); else `$USER@$HOSTNAME`.
pub(crate) fn created_by(env: impl Fn(&str) -> Option<String>) -> String {
    let get = |k: &str| env(k).filter(|v| !v.trim().is_empty());
    let who = if let Some(owner) = get("E2E_OWNER") {
        owner
    } else if let (Some(server), Some(repo), Some(run)) =
        (get("GITHUB_SERVER_URL"), get("GITHUB_REPOSITORY"), get("GITHUB_RUN_ID"))
    {
        format!("{server}/{repo}/actions/runs/{run}")
    } else if let Some(url) = get("CI_JOB_URL").or_else(|| get("BUILD_URL")) {
        url
    } else {
        let user = get("USER").or_else(|| get("LOGNAME")).unwrap_or_else(|| "unknown".to_string());
        match get("HOSTNAME") {
            Some(host) => format!("{user}@{host}"),
            None => user,
        }
    };
    who.chars().take(256).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    }

    #[test]
    fn created_by_prefers_the_owner_then_the_ci_job_then_the_user() {
        assert_eq!(created_by(env(&[("E2E_OWNER", "team-a"), ("USER", "ann")])), "team-a");
        let gh = [
            ("GITHUB_SERVER_URL", "https://github.com"),
            ("GITHUB_REPOSITORY", "org/repo"),
            ("GITHUB_RUN_ID", "42"),
            ("USER", "runner"),
        ];
        assert_eq!(created_by(env(&gh)), "https://github.com/org/repo/actions/runs/42");
        assert_eq!(created_by(env(&[("CI_JOB_URL", "https://gitlab/j/7")])), "https://gitlab/j/7");
        assert_eq!(created_by(env(&[("USER", "ann"), ("E2E_OWNER", " ")])), "ann");
        assert_eq!(created_by(env(&[("LOGNAME", "bo"), ("HOSTNAME", "ci-7")])), "bo@ci-7");
        assert_eq!(created_by(env(&[])), "unknown");
    }

    #[test]
    fn a_run_is_recorded_once_and_kept_until_removed() {
        let dir = std::env::temp_dir().join(format!("xtask-run-{}", generate_run_id().unwrap()));
        let t0 = DateTime::parse_from_rfc3339("2024-06-15T12:00:00Z").unwrap().with_timezone(&Utc);
        let first = load_or_create(&dir, t0).unwrap();
        e2e_migrations::kube::check_run_id(&first.run_id).unwrap();
        assert_eq!(first.run_id.len(), 8);
        let later = load_or_create(&dir, t0 + chrono::Duration::hours(3)).unwrap();
        assert_eq!(later, first, "a second setup keeps the run and its creation time");
        remove(&dir).unwrap();
        assert_eq!(read(&dir).unwrap(), None);
        remove(&dir).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
