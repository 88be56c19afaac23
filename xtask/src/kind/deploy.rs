//! PostgreSQL into a namespace by server-side apply (kube-rs), then a watch until it is ready;
//! on timeout the error carries the pod phase, recent events and the last log lines.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use e2e_migrations::kube::{pick_ready_pod, pod_selector, APP_NAME, MANAGED_BY, MANAGED_BY_LABEL, SECRET_NAME};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Namespace, Pod, Secret};
use kube::api::{DeleteParams, ListParams, LogParams, Patch, PatchParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;

use super::manifests::{Exposure, Manifests};
use crate::kind::config::PostgresSettings;

/// The field manager of our server-side applies.
pub(crate) const FIELD_MANAGER: &str = "e2e-migrations";

/// What we found where the namespace should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NamespaceFacts {
    /// No such namespace.
    Missing,
    /// It exists, with these labels, maybe being deleted.
    Exists { labels: BTreeMap<String, String>, terminating: bool },
}

/// What setup does with the namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NamespaceAction {
    /// Create it.
    Create,
    /// Ours: apply into it.
    Reuse,
    /// Ours but being deleted: wait until it is gone, then create it.
    WaitThenCreate,
    /// Not ours: the error.
    Refuse(String),
}

/// Decides what to do with `namespace` (pure): only a namespace setup labelled is adopted.
pub(crate) fn decide_namespace(namespace: &str, facts: &NamespaceFacts, flag: &str) -> NamespaceAction {
    match facts {
        NamespaceFacts::Missing => NamespaceAction::Create,
        NamespaceFacts::Exists { labels, terminating } if labels.get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY) => {
            if *terminating {
                NamespaceAction::WaitThenCreate
            } else {
                NamespaceAction::Reuse
            }
        }
        NamespaceFacts::Exists { .. } => NamespaceAction::Refuse(format!(
            "namespace {namespace:?} exists and was not created by e2e-setup (no label {MANAGED_BY_LABEL}={MANAGED_BY}); \
             setup never adopts it: pass another {flag}"
        )),
    }
}

/// Whether the Deployment's current spec is rolled out with every replica ready (pure).
pub(crate) fn deployment_ready(d: &Deployment) -> bool {
    let want = d.spec.replicas.unwrap_or(1);
    let Some(st) = &d.status else { return false };
    st.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0)
        && st.updated_replicas.unwrap_or(0) == want
        && st.ready_replicas.unwrap_or(0) == want
        && st.replicas.unwrap_or(0) == want
}

/// One pod's state, for the timeout error.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct PodReport {
    /// The pod.
    pub(crate) name: String,
    /// Its phase.
    pub(crate) phase: String,
    /// Conditions that are not True, as `Type: reason message`.
    pub(crate) conditions: Vec<String>,
    /// Container states that are waiting or terminated, as `name: reason message`.
    pub(crate) containers: Vec<String>,
}

/// What the timeout error says (pure data).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Diagnosis {
    /// The pods.
    pub(crate) pods: Vec<PodReport>,
    /// Recent events in the namespace, oldest first, as `Kind/name: Reason: message`.
    pub(crate) events: Vec<String>,
    /// The pod whose log lines follow, and the lines.
    pub(crate) log: Option<(String, Vec<String>)>,
}

/// The timeout error's text (pure).
pub(crate) fn render_timeout(namespace: &str, timeout_s: u64, d: &Diagnosis) -> String {
    let mut s = format!(
        "PostgreSQL in namespace {namespace} was not ready after {timeout_s} s (postgres.ready_timeout_s in e2e.toml)"
    );
    if d.pods.is_empty() {
        s.push_str("\n  no pod was created (see the events)");
    }
    for p in &d.pods {
        s.push_str(&format!("\n  pod {}: phase {}", p.name, p.phase));
        for c in p.conditions.iter().chain(&p.containers) {
            s.push_str(&format!("\n    {c}"));
        }
    }
    if !d.events.is_empty() {
        s.push_str("\n  recent events:");
        for e in &d.events {
            s.push_str(&format!("\n    {e}"));
        }
    }
    match &d.log {
        Some((pod, lines)) if !lines.is_empty() => {
            s.push_str(&format!("\n  last log lines of {pod}:"));
            for l in lines {
                s.push_str(&format!("\n    | {l}"));
            }
        }
        Some((pod, _)) => s.push_str(&format!("\n  {pod} has logged nothing")),
        None => {}
    }
    s
}

/// Reduces a pod to what the timeout error shows (pure).
pub(crate) fn pod_report(pod: &Pod) -> PodReport {
    let mut r = PodReport { name: pod.name_any(), phase: "Unknown".to_string(), ..PodReport::default() };
    let Some(st) = &pod.status else { return r };
    r.phase = st.phase.clone().unwrap_or_else(|| "Unknown".to_string());
    for c in st.conditions.iter().flatten().filter(|c| c.status != "True") {
        r.conditions.push(
            format!("{}: {} {}", c.type_, c.reason.as_deref().unwrap_or(""), c.message.as_deref().unwrap_or(""))
                .trim_end()
                .to_string(),
        );
    }
    for cs in st.container_statuses.iter().flatten() {
        let Some(state) = &cs.state else { continue };
        if let Some(w) = &state.waiting {
            r.containers.push(
                format!(
                    "container {}: waiting: {} {}",
                    cs.name,
                    w.reason.as_deref().unwrap_or(""),
                    w.message.as_deref().unwrap_or("")
                )
                .trim_end()
                .to_string(),
            );
        }
        if let Some(t) = &state.terminated {
            r.containers.push(format!(
                "container {}: terminated: {} (exit code {}) {}",
                cs.name,
                t.reason.as_deref().unwrap_or(""),
                t.exit_code,
                t.message.as_deref().unwrap_or("")
            ));
        }
        if cs.restart_count > 0 {
            r.containers.push(format!("container {}: restarted {} times", cs.name, cs.restart_count));
        }
    }
    r
}

/// Formats the newest `n` events, oldest first (pure).
pub(crate) fn recent_events(events: &[Event], n: usize) -> Vec<String> {
    let mut evs: Vec<&Event> = events.iter().collect();
    evs.sort_by_key(|e| {
        e.last_timestamp.as_ref().map(|t| t.0).or(e.event_time.as_ref().map(|t| t.0)).or(e
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0))
    });
    let skip = evs.len().saturating_sub(n);
    evs.into_iter()
        .skip(skip)
        .map(|e| {
            let count = e.count.filter(|c| *c > 1).map(|c| format!(" (x{c})")).unwrap_or_default();
            format!(
                "{}/{}: {}: {}{count}",
                e.involved_object.kind.as_deref().unwrap_or("?"),
                e.involved_object.name.as_deref().unwrap_or("?"),
                e.reason.as_deref().unwrap_or(""),
                e.message.as_deref().unwrap_or("").trim()
            )
        })
        .collect()
}

/// Generates a password: 24 random bytes from the OS, hex.
pub(crate) fn generate_password() -> Result<String> {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness from the OS for the password: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

async fn apply<K>(api: &Api<K>, obj: &K) -> Result<()>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(&name, &pp, &Patch::Apply(obj))
        .await
        .with_context(|| format!("server-side apply of {} {name}", K::kind(&())))?;
    Ok(())
}

/// Where setup deploys, and how the host will reach it.
pub(crate) struct Deploy<'a> {
    /// The client.
    pub(crate) client: Client,
    /// The namespace.
    pub(crate) namespace: &'a str,
    /// The flag (or config field) that named the namespace, for errors.
    pub(crate) namespace_flag: &'a str,
    /// PostgreSQL settings.
    pub(crate) pg: &'a PostgresSettings,
    /// NodePort or ClusterIP.
    pub(crate) exposure: Exposure,
}

/// What deploying made.
pub(crate) struct Deployed {
    /// The ready pod.
    pub(crate) pod: String,
    /// The password (kept from an existing Secret, else generated).
    pub(crate) password: String,
    /// Whether the namespace was created now.
    pub(crate) created_namespace: bool,
}

/// Applies the manifests and waits until PostgreSQL is ready.
pub(crate) async fn deploy(d: &Deploy<'_>) -> Result<Deployed> {
    let ns_api: Api<Namespace> = Api::all(d.client.clone());
    let facts = match ns_api.get_opt(d.namespace).await.with_context(|| format!("reading namespace {}", d.namespace))? {
        None => NamespaceFacts::Missing,
        Some(ns) => NamespaceFacts::Exists {
            labels: ns.metadata.labels.clone().unwrap_or_default(),
            terminating: ns.metadata.deletion_timestamp.is_some(),
        },
    };
    let created_namespace = match decide_namespace(d.namespace, &facts, d.namespace_flag) {
        NamespaceAction::Refuse(e) => bail!(e),
        NamespaceAction::Reuse => false,
        NamespaceAction::Create => true,
        NamespaceAction::WaitThenCreate => {
            eprintln!("  namespace {} is being deleted (an earlier teardown): waiting until it is gone", d.namespace);
            wait_namespace_gone(&ns_api, d.namespace, Duration::from_secs(180)).await?;
            true
        }
    };
    let secrets: Api<Secret> = Api::namespaced(d.client.clone(), d.namespace);
    let existing = if created_namespace {
        None
    } else {
        secrets.get_opt(SECRET_NAME).await.context("reading the credentials secret")?
    };
    let password = match existing.as_ref().map(e2e_migrations::kube::credentials_from_secret) {
        Some(Ok(c)) => c.password,
        _ => generate_password()?,
    };
    let m = Manifests::new(d.pg, d.namespace, &password, d.exposure);
    apply(&ns_api, &m.namespace).await?;
    apply(&secrets, &m.secret).await?;
    apply(&Api::namespaced(d.client.clone(), d.namespace), &m.service).await?;
    let deployments: Api<Deployment> = Api::namespaced(d.client.clone(), d.namespace);
    apply(&deployments, &m.deployment).await?;

    let timeout = Duration::from_secs(d.pg.ready_timeout_s);
    let ready = await_condition(deployments, APP_NAME, |d: Option<&Deployment>| d.is_some_and(deployment_ready));
    match tokio::time::timeout(timeout, ready).await {
        Ok(r) => {
            r.context("watching the deployment")?;
        }
        Err(_) => {
            let diagnosis = diagnose(&d.client, d.namespace).await;
            bail!(render_timeout(d.namespace, d.pg.ready_timeout_s, &diagnosis));
        }
    }
    let pods: Api<Pod> = Api::namespaced(d.client.clone(), d.namespace);
    let list =
        pods.list(&ListParams::default().labels(&pod_selector())).await.context("listing the PostgreSQL pods")?;
    let pod = pick_ready_pod(&list.items)
        .with_context(|| format!("deployment {APP_NAME} is ready but no ready pod matches {}", pod_selector()))?;
    Ok(Deployed { pod, password, created_namespace })
}

/// Gathers the timeout error's facts; each part that cannot be read is left out.
async fn diagnose(client: &Client, namespace: &str) -> Diagnosis {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let list = pods.list(&ListParams::default().labels(&pod_selector())).await.map(|l| l.items).unwrap_or_default();
    let events: Api<Event> = Api::namespaced(client.clone(), namespace);
    let events = events.list(&ListParams::default()).await.map(|l| l.items).unwrap_or_default();
    let mut log = None;
    if let Some(p) = list.iter().max_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0)) {
        let name = p.name_any();
        let lp = LogParams { container: Some("postgres".to_string()), tail_lines: Some(20), ..LogParams::default() };
        if let Ok(text) = pods.logs(&name, &lp).await {
            log = Some((name, text.lines().map(str::to_string).collect()));
        }
    }
    Diagnosis { pods: list.iter().map(pod_report).collect(), events: recent_events(&events, 10), log }
}

/// What tearing a namespace down found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Deleted {
    /// Deleted (and gone).
    Deleted,
    /// There was none.
    Missing,
}

/// Deletes `namespace` if it carries our label, and waits until it is gone.
pub(crate) async fn delete_namespace(client: &Client, namespace: &str, timeout: Duration) -> Result<Deleted> {
    let api: Api<Namespace> = Api::all(client.clone());
    let Some(ns) = api.get_opt(namespace).await.with_context(|| format!("reading namespace {namespace}"))? else {
        return Ok(Deleted::Missing);
    };
    let labels = ns.metadata.labels.clone().unwrap_or_default();
    if labels.get(MANAGED_BY_LABEL).map(String::as_str) != Some(MANAGED_BY) {
        bail!("namespace {namespace:?} was not created by e2e-setup (no label {MANAGED_BY_LABEL}={MANAGED_BY}): left alone");
    }
    if ns.metadata.deletion_timestamp.is_none() {
        api.delete(namespace, &DeleteParams::background())
            .await
            .with_context(|| format!("deleting namespace {namespace}"))?;
    }
    wait_namespace_gone(&api, namespace, timeout).await?;
    Ok(Deleted::Deleted)
}

async fn wait_namespace_gone(api: &Api<Namespace>, namespace: &str, timeout: Duration) -> Result<()> {
    let Some(ns) = api.get_opt(namespace).await? else {
        return Ok(());
    };
    let uid = ns.metadata.uid.clone().unwrap_or_default();
    let gone = await_condition(api.clone(), namespace, conditions::is_deleted(&uid));
    match tokio::time::timeout(timeout, gone).await {
        Ok(r) => {
            r.with_context(|| format!("watching namespace {namespace}"))?;
            Ok(())
        }
        Err(_) => {
            bail!("namespace {namespace} is still being deleted after {} s; check its finalizers", timeout.as_secs())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::expect;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStatus};
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateWaiting, ContainerStatus, ObjectReference, PodCondition, PodStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn namespace_decisions() {
        assert_eq!(decide_namespace("e2e", &NamespaceFacts::Missing, "--namespace"), NamespaceAction::Create);
        let ours = labels(&[(MANAGED_BY_LABEL, MANAGED_BY)]);
        let facts = NamespaceFacts::Exists { labels: ours.clone(), terminating: false };
        assert_eq!(decide_namespace("e2e", &facts, "--namespace"), NamespaceAction::Reuse);
        let facts = NamespaceFacts::Exists { labels: ours, terminating: true };
        assert_eq!(decide_namespace("e2e", &facts, "--namespace"), NamespaceAction::WaitThenCreate);
    }

    #[test]
    fn a_namespace_setup_did_not_create_is_refused() {
        let facts = NamespaceFacts::Exists { labels: labels(&[("team", "payments")]), terminating: false };
        let NamespaceAction::Refuse(e) = decide_namespace("payments", &facts, "--namespace") else {
            panic!("must refuse")
        };
        expect![[r#"namespace "payments" exists and was not created by e2e-setup (no label app.kubernetes.io/managed-by=e2e-migrations); setup never adopts it: pass another --namespace"#]]
        .assert_eq(&e);
    }

    fn deployment(generation: i64, observed: i64, updated: i32, ready: i32, total: i32) -> Deployment {
        Deployment {
            metadata: ObjectMeta { generation: Some(generation), ..ObjectMeta::default() },
            spec: DeploymentSpec { replicas: Some(1), ..DeploymentSpec::default() },
            status: Some(DeploymentStatus {
                observed_generation: Some(observed),
                updated_replicas: Some(updated),
                ready_replicas: Some(ready),
                replicas: Some(total),
                ..DeploymentStatus::default()
            }),
        }
    }

    #[test]
    fn a_deployment_is_ready_when_its_current_spec_is_rolled_out() {
        assert!(deployment_ready(&deployment(2, 2, 1, 1, 1)));
        assert!(!deployment_ready(&deployment(2, 1, 1, 1, 1)), "old generation");
        assert!(!deployment_ready(&deployment(2, 2, 1, 0, 1)), "not ready");
        assert!(!deployment_ready(&deployment(2, 2, 1, 1, 2)), "old pod still there");
        assert!(!deployment_ready(&Deployment::default()));
    }

    fn t(s: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(s).unwrap())
    }

    #[test]
    fn timeout_error_shows_phase_events_and_logs() {
        let pod = Pod {
            metadata: ObjectMeta { name: Some("postgres-7d4b9-xk2p".into()), ..ObjectMeta::default() },
            status: Some(PodStatus {
                phase: Some("Pending".into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: "False".into(),
                    reason: Some("ContainersNotReady".into()),
                    message: Some("containers with unready status: [postgres]".into()),
                    ..PodCondition::default()
                }]),
                container_statuses: Some(vec![ContainerStatus {
                    name: "postgres".into(),
                    state: Some(ContainerState {
                        waiting: Some(ContainerStateWaiting {
                            reason: Some("ErrImageNeverPull".into()),
                            message: Some(
                                "Container image \"postgres:16\" is not present with pull policy of Never".into(),
                            ),
                        }),
                        ..ContainerState::default()
                    }),
                    ..ContainerStatus::default()
                }]),
                ..PodStatus::default()
            }),
            ..Pod::default()
        };
        let event = |s: i64, reason: &str, msg: &str, count: i32| Event {
            involved_object: ObjectReference {
                kind: Some("Pod".into()),
                name: Some("postgres-7d4b9-xk2p".into()),
                ..ObjectReference::default()
            },
            reason: Some(reason.into()),
            message: Some(msg.into()),
            last_timestamp: Some(t(s)),
            count: Some(count),
            ..Event::default()
        };
        let events = vec![
            event(
                30,
                "ErrImageNeverPull",
                "Container image \"postgres:16\" is not present with pull policy of Never",
                12,
            ),
            event(10, "Scheduled", "Successfully assigned e2e/postgres-7d4b9-xk2p to kind-control-plane", 1),
        ];
        let d = Diagnosis {
            pods: vec![pod_report(&pod)],
            events: recent_events(&events, 10),
            log: Some(("postgres-7d4b9-xk2p".into(), vec![])),
        };
        expect![[r#"
            PostgreSQL in namespace e2e was not ready after 180 s (postgres.ready_timeout_s in e2e.toml)
              pod postgres-7d4b9-xk2p: phase Pending
                Ready: ContainersNotReady containers with unready status: [postgres]
                container postgres: waiting: ErrImageNeverPull Container image "postgres:16" is not present with pull policy of Never
              recent events:
                Pod/postgres-7d4b9-xk2p: Scheduled: Successfully assigned e2e/postgres-7d4b9-xk2p to kind-control-plane
                Pod/postgres-7d4b9-xk2p: ErrImageNeverPull: Container image "postgres:16" is not present with pull policy of Never (x12)
              postgres-7d4b9-xk2p has logged nothing"#]]
        .assert_eq(&render_timeout("e2e", 180, &d));
    }

    #[test]
    fn generated_passwords_are_long_and_differ() {
        let (a, b) = (generate_password().unwrap(), generate_password().unwrap());
        assert_eq!(a.len(), 48);
        assert_ne!(a, b);
    }
}
