//! A setup's identity on a cluster: the run id and its creation time, and who ran it (a CI job,
//! else the user).
//!
//! The run lives in this checkout's state record (`SetupState::run_id` and `run_created_at`),
//! from the first setup until teardown. Setup saves it there (phase `creating`) before anything
//! is made on the cluster, so a setup that fails or is killed half-way is continued by the next
//! one under the same run id, and teardown finds its objects, instead of leaving objects that
//! belong to nobody. (An earlier version kept it in `run.json`; the record replaced that file.)

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use e2e_migrations::lifecycle::Saved;

/// The run: its id and when its first setup happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RunRecord {
    /// The run id (see `e2e_migrations::kube::check_run_id`).
    pub(crate) run_id: String,
    /// The first setup of the run.
    pub(crate) created_at: DateTime<Utc>,
}

/// The run this checkout's record holds, if any (pure over what was read; a run without its
/// time, from a record that lost it, counts from `now`).
pub(crate) fn recorded(saved: &Saved, now: DateTime<Utc>) -> Result<Option<RunRecord>> {
    let Saved::Ours(rec) = saved else {
        return Ok(None);
    };
    let Some(run_id) = &rec.setup.run_id else {
        return Ok(None);
    };
    e2e_migrations::kube::check_run_id(run_id).context("the run id in this checkout's state record")?;
    Ok(Some(RunRecord { run_id: run_id.clone(), created_at: rec.setup.run_created_at.unwrap_or(now) }))
}

/// The recorded run, else a new one (which the caller saves in the record, with the setup,
/// before it makes anything on the cluster).
pub(crate) fn recorded_or_new(saved: &Saved, now: DateTime<Utc>) -> Result<RunRecord> {
    match recorded(saved, now)? {
        Some(r) => Ok(r),
        None => Ok(RunRecord { run_id: generate_run_id()?, created_at: now }),
    }
}

/// A new run id: 8 hex digits from the OS's randomness (unique enough among the runs of one
/// namespace, and short enough for names).
fn generate_run_id() -> Result<String> {
    Ok(e2e_migrations::secret::random_hex(4, "a run id")?)
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
    fn a_run_is_taken_from_the_record_once_made_and_new_otherwise() {
        use e2e_migrations::lifecycle::{BackendKind, Phase, Record, SetupState};
        let t0 = DateTime::parse_from_rfc3339("2024-06-15T12:00:00Z").unwrap().with_timezone(&Utc);
        let first = recorded_or_new(&Saved::Missing, t0).unwrap();
        e2e_migrations::kube::check_run_id(&first.run_id).unwrap();
        assert_eq!((first.run_id.len(), first.created_at), (8, t0));
        let setup = SetupState {
            context: Some("lab".into()),
            namespace: Some("e2e".into()),
            owned: true,
            run_id: Some(first.run_id.clone()),
            run_created_at: Some(t0),
            ..SetupState::new(BackendKind::Kube)
        };
        let rec = Record {
            format: e2e_migrations::lifecycle::record::RECORD_FORMAT,
            made_in: "/w/target/e2e".into(),
            instance_id: "i".into(),
            phase: Phase::Creating,
            setup: setup.clone(),
            local: None,
        };
        let later = recorded_or_new(&Saved::Ours(rec.clone()), t0 + chrono::Duration::hours(3)).unwrap();
        assert_eq!(later, first, "a second setup keeps the run and its creation time");
        let copied = Saved::Foreign { record: Box::new(rec.clone()), made_in: "/orig".into() };
        assert_ne!(recorded_or_new(&copied, t0).unwrap().run_id, first.run_id, "a copied record's run is not ours");
        let mut bad = rec;
        bad.setup.run_id = Some("../x".into());
        assert!(recorded(&Saved::Ours(bad), t0).unwrap_err().to_string().contains("state record"));
    }
}
