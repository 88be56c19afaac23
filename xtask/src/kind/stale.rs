//! `e2e-teardown --stale AGE`: which setups left on a shared cluster a cleanup job removes (pure).
//!
//! A setup on a cluster is one *run*: the objects labelled `e2e-migrations/run-id=R` in one
//! namespace (and the namespace itself when setup created it). Its owner, a CI job or a person,
//! is not visible from the cluster, so "the owner is gone" is decided from the run's own
//! timestamps: the run's last activity is the latest of
//! - the `e2e-migrations/created-at` label (the run's first setup),
//! - the `e2e-migrations/renewed-at` label (every setup of the run, warm ones too, renews it),
//! - the API server's `creationTimestamp` of each object (so a wrong clock on the machine that
//!   ran setup cannot make a run look older than it is),
//!
//! over all of the run's objects. A run is stale when its last activity is at least AGE ago; a
//! run that was set up or renewed more recently is kept. An object without the run-id label, or a
//! run without a readable `created-at` label, is never removed: it was not made by this version
//! of setup, or not by setup at all.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Result};
use chrono::{DateTime, Utc};
use e2e_migrations::kube::{
    parse_label_time, CREATED_AT_LABEL, CREATED_BY_ANNOTATION, MANAGED_BY, MANAGED_BY_LABEL, RENEWED_AT_LABEL,
    RUN_ID_LABEL,
};

/// The kinds of object setup makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Kind {
    /// The namespace, when setup created it.
    Namespace,
    /// PostgreSQL.
    Deployment,
    /// Its Service.
    Service,
    /// Its credentials.
    Secret,
}

impl Kind {
    /// The kind as `kubectl` names it.
    pub(crate) fn word(self) -> &'static str {
        match self {
            Kind::Namespace => "namespace",
            Kind::Deployment => "deployment",
            Kind::Service => "service",
            Kind::Secret => "secret",
        }
    }
}

/// An object found on the cluster with our manager label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Found {
    /// Its kind.
    pub(crate) kind: Kind,
    /// Its namespace (a namespace's own name for a namespace).
    pub(crate) namespace: String,
    /// Its name.
    pub(crate) name: String,
    /// Its labels.
    pub(crate) labels: BTreeMap<String, String>,
    /// Its annotations.
    pub(crate) annotations: BTreeMap<String, String>,
    /// The API server's creation time.
    pub(crate) created: Option<DateTime<Utc>>,
    /// Its uid (a precondition of the delete, so a newer object of the same name is kept).
    pub(crate) uid: Option<String>,
    /// Its resource version (a precondition of the delete, so a run renewed since is kept).
    pub(crate) resource_version: Option<String>,
}

/// One run's objects and what they say about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Run {
    /// The namespace.
    pub(crate) namespace: String,
    /// The run id.
    pub(crate) run_id: String,
    /// Its objects; a namespace (when setup made it) first.
    pub(crate) objects: Vec<Found>,
    /// The `created-at` label (the earliest readable one).
    pub(crate) created_at: DateTime<Utc>,
    /// Its last activity (see the module documentation).
    pub(crate) last_active: DateTime<Utc>,
    /// The `created-by` annotation.
    pub(crate) created_by: Option<String>,
}

impl Run {
    /// Whether setup created the namespace for this run (then the namespace is removed whole).
    pub(crate) fn owns_namespace(&self) -> bool {
        self.objects.iter().any(|o| o.kind == Kind::Namespace)
    }
}

/// What the cleanup does with a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Idle for at least the age: remove it.
    Remove,
    /// Active more recently: keep it.
    Keep,
}

/// A run and the decision about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Decision {
    /// The run.
    pub(crate) run: Run,
    /// How long since its last activity (zero when that lies in the future).
    pub(crate) idle: Duration,
    /// Remove or keep.
    pub(crate) verdict: Verdict,
}

/// An object left alone because it lacks what would make it safe to judge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Skipped {
    /// `kind namespace/name`.
    pub(crate) what: String,
    /// Why.
    pub(crate) why: String,
}

/// Parses an age such as `2h`, `90m`, `1h30m`, `2d` or `45s` (pure); it must be above zero.
pub(crate) fn parse_age(text: &str) -> Result<Duration> {
    let bad = || anyhow::anyhow!("--stale {text:?}: expected an age such as 2h, 90m, 1h30m or 2d");
    let mut total: u64 = 0;
    let mut digits = String::new();
    let mut any = false;
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        let n: u64 = digits.parse().map_err(|_| bad())?;
        total = n.checked_mul(unit).and_then(|v| total.checked_add(v)).ok_or_else(bad)?;
        digits.clear();
        any = true;
    }
    if !digits.is_empty() || !any {
        return Err(bad());
    }
    if total == 0 {
        bail!("--stale {text:?}: the age must be above zero (a cleanup must never remove a run that was just set up)");
    }
    Ok(Duration::from_secs(total))
}

/// An age as people write it: `2h`, `1h30m`, `45s`, `3d4h` (pure).
pub(crate) fn format_age(d: Duration) -> String {
    let mut s = d.as_secs();
    let mut out = String::new();
    for (unit, secs) in [("d", 86_400), ("h", 3600), ("m", 60)] {
        if s >= secs {
            out.push_str(&format!("{}{unit}", s / secs));
            s %= secs;
        }
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}

fn time_label(o: &Found, label: &str) -> Option<DateTime<Utc>> {
    o.labels.get(label).and_then(|v| parse_label_time(v))
}

/// Groups what was found into runs, and sets aside what cannot be judged (pure).
pub(crate) fn group(found: Vec<Found>) -> (Vec<Run>, Vec<Skipped>) {
    let mut skipped = Vec::new();
    let mut by_run: BTreeMap<(String, String), Vec<Found>> = BTreeMap::new();
    for o in found {
        let what = format!("{} {}/{}", o.kind.word(), o.namespace, o.name);
        if o.labels.get(MANAGED_BY_LABEL).map(String::as_str) != Some(MANAGED_BY) {
            skipped.push(Skipped { what, why: format!("no label {MANAGED_BY_LABEL}={MANAGED_BY}") });
            continue;
        }
        let Some(run_id) = o.labels.get(RUN_ID_LABEL).cloned() else {
            skipped.push(Skipped { what, why: format!("no label {RUN_ID_LABEL} (made before run ids)") });
            continue;
        };
        by_run.entry((o.namespace.clone(), run_id)).or_default().push(o);
    }
    let mut runs = Vec::new();
    for ((namespace, run_id), mut objects) in by_run {
        objects.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
        let Some(created_at) = objects.iter().filter_map(|o| time_label(o, CREATED_AT_LABEL)).min() else {
            for o in &objects {
                skipped.push(Skipped {
                    what: format!("{} {}/{}", o.kind.word(), o.namespace, o.name),
                    why: format!("run {run_id} has no readable label {CREATED_AT_LABEL}"),
                });
            }
            continue;
        };
        let last_active = objects
            .iter()
            .flat_map(|o| [time_label(o, CREATED_AT_LABEL), time_label(o, RENEWED_AT_LABEL), o.created])
            .flatten()
            .max()
            .unwrap_or(created_at);
        let created_by = objects.iter().find_map(|o| o.annotations.get(CREATED_BY_ANNOTATION).cloned());
        runs.push(Run { namespace, run_id, objects, created_at, last_active, created_by });
    }
    (runs, skipped)
}

/// Decides each run (pure): removed when its last activity is at least `age` before `now`.
pub(crate) fn decide(runs: Vec<Run>, now: DateTime<Utc>, age: Duration) -> Vec<Decision> {
    runs.into_iter()
        .map(|run| {
            let idle = (now - run.last_active).to_std().unwrap_or(Duration::ZERO);
            let verdict = if idle >= age { Verdict::Remove } else { Verdict::Keep };
            Decision { run, idle, verdict }
        })
        .collect()
}

/// The report lines, one per run and per object left alone (pure).
pub(crate) fn render(decisions: &[Decision], skipped: &[Skipped], age: Duration, dry_run: bool) -> Vec<String> {
    let mut lines = Vec::new();
    for d in decisions {
        let r = &d.run;
        let what = if r.owns_namespace() {
            format!("namespace {}", r.namespace)
        } else {
            r.objects.iter().map(|o| format!("{} {}", o.kind.word(), o.name)).collect::<Vec<_>>().join(", ")
        };
        let verdict = match (&d.verdict, dry_run) {
            (Verdict::Remove, false) => format!("stale: removing {what}"),
            (Verdict::Remove, true) => format!("stale: would remove {what}"),
            (Verdict::Keep, _) => format!("kept (younger than {})", format_age(age)),
        };
        lines.push(format!(
            "run {} in namespace {} (created {} by {}, last setup {} ago): {verdict}",
            r.run_id,
            r.namespace,
            r.created_at.format("%Y-%m-%d %H:%M UTC"),
            r.created_by.as_deref().unwrap_or("?"),
            format_age(d.idle)
        ));
    }
    for s in skipped {
        lines.push(format!("{}: left alone: {}", s.what, s.why));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use e2e_migrations::kube::label_time;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn obj(kind: Kind, ns: &str, name: &str, labels: &[(&str, String)], created: &str) -> Found {
        Found {
            kind,
            namespace: ns.into(),
            name: name.into(),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
            annotations: BTreeMap::from([(CREATED_BY_ANNOTATION.to_string(), "ci".to_string())]),
            created: Some(at(created)),
            uid: None,
            resource_version: None,
        }
    }

    fn run_labels(run: &str, created: &str, renewed: &str) -> Vec<(&'static str, String)> {
        vec![
            (MANAGED_BY_LABEL, MANAGED_BY.to_string()),
            (RUN_ID_LABEL, run.to_string()),
            (CREATED_AT_LABEL, label_time(at(created))),
            (RENEWED_AT_LABEL, label_time(at(renewed))),
        ]
    }

    fn run_objects(ns: &str, run: &str, created: &str, renewed: &str) -> Vec<Found> {
        let l = run_labels(run, created, renewed);
        vec![
            obj(Kind::Deployment, ns, &format!("postgres-{run}"), &l, created),
            obj(Kind::Service, ns, &format!("postgres-{run}"), &l, created),
            obj(Kind::Secret, ns, &format!("postgres-{run}-credentials"), &l, created),
        ]
    }

    const NOW: &str = "2024-06-15T12:00:00Z";
    const TWO_HOURS: Duration = Duration::from_secs(7200);

    fn verdicts(found: Vec<Found>) -> Vec<(String, Verdict)> {
        let (runs, _) = group(found);
        decide(runs, at(NOW), TWO_HOURS).into_iter().map(|d| (d.run.run_id, d.verdict)).collect()
    }

    #[test]
    fn a_run_idle_for_the_age_is_removed_and_a_younger_one_kept() {
        let mut found = run_objects("team", "old", "2024-06-15T09:00:00Z", "2024-06-15T09:00:00Z");
        found.extend(run_objects("team", "young", "2024-06-15T10:30:00Z", "2024-06-15T10:30:00Z"));
        found.extend(run_objects("team", "edge", "2024-06-15T10:00:00Z", "2024-06-15T10:00:00Z"));
        assert_eq!(
            verdicts(found),
            [("edge".into(), Verdict::Remove), ("old".into(), Verdict::Remove), ("young".into(), Verdict::Keep)]
        );
    }

    #[test]
    fn a_renewed_run_is_kept_however_old() {
        let found = run_objects("team", "daily", "2024-06-10T09:00:00Z", "2024-06-15T11:00:00Z");
        assert_eq!(verdicts(found), [("daily".into(), Verdict::Keep)]);
    }

    #[test]
    fn the_server_creation_time_wins_over_a_label_from_a_slow_clock() {
        // setup's clock said 08:00, but the API server made the objects at 11:00
        let mut found = run_objects("team", "skewed", "2024-06-15T08:00:00Z", "2024-06-15T08:00:00Z");
        for o in &mut found {
            o.created = Some(at("2024-06-15T11:00:00Z"));
        }
        assert_eq!(verdicts(found), [("skewed".into(), Verdict::Keep)]);
    }

    #[test]
    fn a_run_from_the_future_is_kept() {
        let found = run_objects("team", "ahead", "2024-06-15T13:00:00Z", "2024-06-15T13:00:00Z");
        let (runs, _) = group(found);
        let d = decide(runs, at(NOW), TWO_HOURS);
        assert_eq!((d[0].idle, &d[0].verdict), (Duration::ZERO, &Verdict::Keep));
    }

    #[test]
    fn unlabelled_objects_and_runs_without_a_creation_label_are_never_judged() {
        let old = "2024-06-01T00:00:00Z";
        let mut found = vec![
            obj(Kind::Deployment, "team", "theirs", &[], old),
            obj(Kind::Namespace, "legacy", "legacy", &[(MANAGED_BY_LABEL, MANAGED_BY.to_string())], old),
            obj(
                Kind::Secret,
                "team",
                "postgres-x-credentials",
                &[(MANAGED_BY_LABEL, MANAGED_BY.to_string()), (RUN_ID_LABEL, "x".to_string())],
                old,
            ),
        ];
        found.extend(run_objects("team", "old", old, old));
        let (runs, skipped) = group(found);
        let decisions = decide(runs, at(NOW), TWO_HOURS);
        assert_eq!(decisions.len(), 1);
        expect_test::expect![[r#"
            [
                "run old in namespace team (created 2024-06-01 00:00 UTC by ci, last setup 14d12h ago): stale: removing deployment postgres-old, service postgres-old, secret postgres-old-credentials",
                "deployment team/theirs: left alone: no label app.kubernetes.io/managed-by=e2e-migrations",
                "namespace legacy/legacy: left alone: no label e2e-migrations/run-id (made before run ids)",
                "secret team/postgres-x-credentials: left alone: run x has no readable label e2e-migrations/created-at",
            ]
        "#]]
        .assert_debug_eq(&render(&decisions, &skipped, TWO_HOURS, false));
    }

    #[test]
    fn a_run_in_its_own_namespace_is_removed_with_the_namespace() {
        let t = "2024-06-15T01:00:00Z";
        let mut found = run_objects("e2e-pr-7", "r7", t, t);
        found.push(obj(Kind::Namespace, "e2e-pr-7", "e2e-pr-7", &run_labels("r7", t, t), t));
        let (runs, _) = group(found);
        assert!(runs[0].owns_namespace());
        assert_eq!(runs[0].objects[0].kind, Kind::Namespace);
        let decisions = decide(runs, at(NOW), TWO_HOURS);
        expect_test::expect![[r#"
            [
                "run r7 in namespace e2e-pr-7 (created 2024-06-15 01:00 UTC by ci, last setup 11h ago): stale: would remove namespace e2e-pr-7",
            ]
        "#]]
        .assert_debug_eq(&render(&decisions, &[], TWO_HOURS, true));
    }

    #[test]
    fn the_same_run_id_in_two_namespaces_is_two_runs() {
        let mut found = run_objects("a", "r", "2024-06-15T01:00:00Z", "2024-06-15T01:00:00Z");
        found.extend(run_objects("b", "r", "2024-06-15T11:00:00Z", "2024-06-15T11:00:00Z"));
        let (runs, _) = group(found);
        let d = decide(runs, at(NOW), TWO_HOURS);
        let v: Vec<(&str, &Verdict)> = d.iter().map(|d| (d.run.namespace.as_str(), &d.verdict)).collect();
        assert_eq!(v, [("a", &Verdict::Remove), ("b", &Verdict::Keep)]);
    }

    #[test]
    fn ages_parse_with_units_and_refuse_zero_and_bare_numbers() {
        assert_eq!(parse_age("2h").unwrap(), TWO_HOURS);
        assert_eq!(parse_age("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_age("2d").unwrap(), Duration::from_secs(172_800));
        assert_eq!(parse_age("45s").unwrap(), Duration::from_secs(45));
        for bad in ["", "2", "h", "2x", "-1h", "1.5h", "2h3"] {
            let e = parse_age(bad).unwrap_err().to_string();
            assert!(e.contains("expected an age such as 2h"), "{bad}: {e}");
        }
        assert!(parse_age("0h").unwrap_err().to_string().contains("must be above zero"));
        assert_eq!(format_age(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_age(Duration::ZERO), "0s");
        assert_eq!(format_age(Duration::from_secs(90_061)), "1d1h1m1s");
    }
}
