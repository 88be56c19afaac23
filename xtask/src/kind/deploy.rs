//! PostgreSQL into a namespace by server-side apply (kube-rs), then a watch until it is ready;
//! on timeout the error carries the pod phase, recent events and the last log lines; a refused
//! call names the missing right and the Role that grants it.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use e2e_migrations::kube::rbac::{self, Need};
use e2e_migrations::kube::{
    instance_name, pick_ready_pod, pod_selector, secret_name, CREATED_AT_LABEL, MANAGED_BY, MANAGED_BY_LABEL,
    RUN_ID_LABEL,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Namespace, Pod, Secret};
use kube::api::{ListParams, LogParams, Patch, PatchParams};
use kube::runtime::wait::await_condition;
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;

use super::manifests::{Exposure, Manifests, RunMeta};
use crate::kind::config::PostgresSettings;
use crate::progress::say;
use crate::progress::Step;

/// The field manager of our server-side applies.
pub(crate) const FIELD_MANAGER: &str = "e2e-migrations";

/// How setup treats the namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NamespaceMode {
    /// Kube: setup creates the namespace for its run, and teardown deletes it.
    Create,
    /// Kube `--existing-namespace`: someone else's namespace. Setup never reads, creates or
    /// deletes it (a Role in it is enough), and owns only its run's objects there.
    Existing,
    /// Kind: the namespace of a cluster that setup created, so whatever e2e-setup left in it is
    /// ours (runs whose state was lost are replaced).
    Kind,
}

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

/// Decides what to do with `namespace` (pure): only a namespace that e2e-setup labelled for this
/// run (or, before run ids, for no run) is adopted; on kind, any namespace e2e-setup labelled
/// for this checkout (`checkout`, its tag), or for no checkout (made before clusters were shared).
pub(crate) fn decide_namespace(
    namespace: &str,
    facts: &NamespaceFacts,
    run_id: &str,
    mode: NamespaceMode,
    flag: &str,
    checkout: Option<&str>,
) -> NamespaceAction {
    let NamespaceFacts::Exists { labels, terminating } = facts else {
        return NamespaceAction::Create;
    };
    if let (NamespaceMode::Kind, Some(me), Some(theirs)) = (mode, checkout, labels.get(super::share::CHECKOUT_LABEL)) {
        if theirs != me {
            return NamespaceAction::Refuse(format!(
                "namespace {namespace:?} of the shared Kind cluster belongs to another checkout ({theirs}); its \
                 teardown would delete it under you: pass another {flag}, or leave it out to get this checkout's own"
            ));
        }
    }
    if labels.get(MANAGED_BY_LABEL).map(String::as_str) != Some(MANAGED_BY) {
        let beside = if mode == NamespaceMode::Kind {
            String::new()
        } else {
            ", or add --existing-namespace to work in it beside what is there (setup then owns only its own objects)"
                .to_string()
        };
        return NamespaceAction::Refuse(format!(
            "namespace {namespace:?} exists and was not created by e2e-setup (no label {MANAGED_BY_LABEL}={MANAGED_BY}); \
             setup never adopts it: pass another {flag}{beside}"
        ));
    }
    if *terminating {
        return NamespaceAction::WaitThenCreate;
    }
    match labels.get(RUN_ID_LABEL) {
        Some(other) if other != run_id && mode != NamespaceMode::Kind => {
            let since = labels.get(CREATED_AT_LABEL).map(|t| format!(", created {t}")).unwrap_or_default();
            NamespaceAction::Refuse(format!(
                "namespace {namespace:?} belongs to another e2e-setup run ({other}{since}); its teardown would delete the \
                 namespace and this run with it: pass another {flag}, or add --existing-namespace to run beside it; \
                 if run {other} is gone, remove it: cargo xtask e2e-teardown --backend kube --context C --namespace {namespace}"
            ))
        }
        _ => NamespaceAction::Reuse,
    }
}

/// Whether an object found under a run's name was made by that run (pure): labelled as ours
/// with this run id. Anything else under the name is someone else's and is left alone.
pub(crate) fn made_by_run(labels: Option<&BTreeMap<String, String>>, run_id: &str) -> bool {
    labels.is_some_and(|l| {
        l.get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY)
            && l.get(RUN_ID_LABEL).map(String::as_str) == Some(run_id)
    })
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

/// The timeout error's text (pure): what the pods say, the run's recent events (at most
/// [`EVENTS_SHOWN`], repeats counted), its last log lines, hints, and the command that removes
/// what the failed setup made (`cleanup`).
pub(crate) fn render_timeout(namespace: &str, timeout_s: u64, d: &Diagnosis, cleanup: &str) -> String {
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
    for hint in hints(d) {
        s.push_str(&format!("\n  hint: {hint}"));
    }
    s.push_str(&format!("\n  to remove what this setup made: {cleanup}"));
    s
}

/// What to do about the states the diagnosis shows that have a known cause (pure).
fn hints(d: &Diagnosis) -> Vec<String> {
    let said = |needle: &str| d.pods.iter().flat_map(|p| &p.containers).any(|c| c.contains(needle));
    let mut hints = Vec::new();
    if said("runAsNonRoot and image will run as root") {
        hints.push(
            "the image's user is root and the pod names no uid: set postgres.run_as_user (and run_as_group, fs_group) \
             in e2e.toml to a non-root id the image can run as (999 in the official postgres image); \"platform\" works \
             only where the platform assigns one (OpenShift's restricted SCC)"
                .to_string(),
        );
    }
    if said("ErrImageNeverPull") {
        hints.push(
            "the node has no such image and postgres.image_pull_policy is Never: load the image into the node"
                .to_string(),
        );
    }
    hints
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

/// How many distinct events the timeout error shows at most.
pub(crate) const EVENTS_SHOWN: usize = 6;

/// The newest `n` distinct events about the run's objects (those named `prefix...`: its
/// Deployment, ReplicaSets and pods), oldest first, each once: repeats (the same object, reason
/// and message, also as separate Event objects) are counted, and older ones beyond `n` are
/// counted in a last line (pure).
pub(crate) fn recent_events(events: &[Event], prefix: &str, n: usize) -> Vec<String> {
    let when = |e: &Event| {
        e.last_timestamp.as_ref().map(|t| t.0).or(e.event_time.as_ref().map(|t| t.0)).or(e
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0))
    };
    // (kind, name, reason, message) -> (times, newest)
    type Key = (String, String, String, String);
    let mut groups: Vec<(Key, (i64, Option<k8s_openapi::jiff::Timestamp>))> = Vec::new();
    for e in events {
        let name = e.involved_object.name.clone().unwrap_or_default();
        if !name.starts_with(prefix) {
            continue;
        }
        let key = (
            e.involved_object.kind.clone().unwrap_or_else(|| "?".to_string()),
            name,
            e.reason.clone().unwrap_or_default(),
            e.message.clone().unwrap_or_default().trim().to_string(),
        );
        let times = i64::from(e.count.unwrap_or(1).max(1));
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, (count, newest))) => {
                *count += times;
                *newest = (*newest).max(when(e));
            }
            None => groups.push((key, (times, when(e)))),
        }
    }
    groups.sort_by_key(|(_, (_, newest))| *newest);
    let older = groups.len().saturating_sub(n);
    let mut lines: Vec<String> = groups
        .into_iter()
        .skip(older)
        .map(|((kind, name, reason, message), (count, _))| {
            let count = if count > 1 { format!(" (x{count})") } else { String::new() };
            format!("{kind}/{name}: {reason}: {message}{count}")
        })
        .collect();
    if older > 0 {
        lines.insert(0, format!("({older} older event{} not shown)", if older == 1 { "" } else { "s" }));
    }
    lines
}

/// Maps an API error of `need` to an error that says what was being done and, for a refusal,
/// which right is missing and which Role grants it.
pub(crate) fn api_error(e: kube::Error, need: Need, namespace: Option<&str>, what: &str) -> anyhow::Error {
    anyhow::Error::new(rbac::explain(e, need, namespace, what))
}

/// As [`api_error`] for a failed readiness watch (its list or its watch).
fn watch_error(
    e: kube::runtime::wait::Error,
    list: Need,
    watch: Need,
    namespace: Option<&str>,
    what: &str,
) -> anyhow::Error {
    use kube::runtime::watcher::Error as W;
    let kube::runtime::wait::Error::ProbeFailed(w) = e;
    match w {
        W::InitialListFailed(e) => api_error(e, list, namespace, what),
        W::WatchStartFailed(e) | W::WatchFailed(e) => api_error(e, watch, namespace, what),
        other => anyhow::anyhow!("{what}: {other}"),
    }
}

/// Server-side apply of `obj`; a missing namespace in `--existing-namespace` mode says so.
async fn apply<K>(api: &Api<K>, obj: &K, need: Need, namespace: Option<&str>, mode: NamespaceMode) -> Result<()>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    let what = format!("server-side apply of {} {name}", K::kind(&()));
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    match api.patch(&name, &pp, &Patch::Apply(obj)).await {
        Ok(_) => Ok(()),
        Err(e) if mode == NamespaceMode::Existing && rbac::is_not_found(&e) => bail!(
            "{what}: namespace {} does not exist; --existing-namespace works in a namespace made beforehand \
             (ask for one, with the Role in docs/rbac/role.yaml bound there), or leave it out to let setup create \
             the namespace (that needs the ClusterRole in docs/rbac/clusterrole.yaml)",
            namespace.unwrap_or("?")
        ),
        Err(e) => Err(api_error(e, need, namespace, &what)),
    }
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
    /// Whose namespace it is.
    pub(crate) mode: NamespaceMode,
    /// The run's labels.
    pub(crate) run: &'a RunMeta,
    /// Kind: this checkout's tag and its labels for the namespace (checkout, port slot).
    pub(crate) checkout: Option<(&'a str, BTreeMap<String, String>)>,
    /// The command that removes what this setup made, for the timeout error.
    pub(crate) cleanup: String,
}

/// What applying the run's objects did.
pub(crate) struct Deployed {
    /// The password (kept from the run's Secret, else generated).
    pub(crate) password: String,
    /// Whether the namespace was created now.
    pub(crate) created_namespace: bool,
    /// Whether the run's Deployment was there already (a warm setup).
    pub(crate) reused: bool,
}

/// What a step's done line says of a deploy (pure): `created`, `reused`, `created, namespace created`.
pub(crate) fn deployed_outcome(d: &Deployed) -> String {
    let what = if d.reused { "reused" } else { "created" };
    if d.created_namespace {
        format!("{what}, namespace created")
    } else {
        what.to_string()
    }
}

/// Applies the run's objects (namespace, Secret, Service, Deployment) by server-side apply;
/// [`wait_ready`] then waits for the pod. `step` shows a wait for a namespace being deleted.
pub(crate) async fn deploy(d: &Deploy<'_>, step: &Step) -> Result<Deployed> {
    let (ns, run_id) = (d.namespace, d.run.run_id.as_str());
    let ns_api: Api<Namespace> = Api::all(d.client.clone());
    let mut created_namespace = false;
    if d.mode != NamespaceMode::Existing {
        let found = ns_api
            .get_opt(ns)
            .await
            .map_err(|e| api_error(e, Need::GetNamespaces, None, &format!("reading namespace {ns}")))?;
        let facts = match found {
            None => NamespaceFacts::Missing,
            Some(n) => NamespaceFacts::Exists {
                labels: n.metadata.labels.clone().unwrap_or_default(),
                terminating: n.metadata.deletion_timestamp.is_some(),
            },
        };
        let me = d.checkout.as_ref().map(|(tag, _)| *tag);
        created_namespace = match decide_namespace(ns, &facts, run_id, d.mode, d.namespace_flag, me) {
            NamespaceAction::Refuse(e) => bail!(e),
            NamespaceAction::Reuse => false,
            NamespaceAction::Create => true,
            NamespaceAction::WaitThenCreate => {
                step.note(format!("namespace {ns} is being deleted (an earlier teardown): waiting until it is gone"));
                step.detail(format!("waiting until namespace {ns} (being deleted) is gone"));
                super::remove::wait_namespace_gone(&ns_api, ns, Duration::from_secs(180)).await?;
                true
            }
        };
    }
    if d.mode == NamespaceMode::Kind && !created_namespace {
        for line in super::remove::remove_other_runs(&d.client, ns, run_id).await? {
            say!("  {line}");
        }
    }
    let secrets: Api<Secret> = Api::namespaced(d.client.clone(), ns);
    let deployments: Api<Deployment> = Api::namespaced(d.client.clone(), ns);
    let (secret, instance) = (secret_name(run_id), instance_name(run_id));
    let (existing, reused) = if created_namespace {
        (None, false)
    } else {
        let s = secrets
            .get_opt(&secret)
            .await
            .map_err(|e| api_error(e, Need::GetSecrets, Some(ns), &format!("reading secret {secret}")))?;
        let dep = deployments
            .get_opt(&instance)
            .await
            .map_err(|e| api_error(e, Need::GetDeployments, Some(ns), &format!("reading deployment {instance}")))?;
        for (kind, labels) in
            [("secret", s.as_ref().map(|s| s.labels())), ("deployment", dep.as_ref().map(|d| d.labels()))]
        {
            if labels.is_some() && !made_by_run(labels, run_id) {
                bail!(
                    "{kind} {} in namespace {ns} exists but was not made by run {run_id} of e2e-setup (no label {RUN_ID_LABEL}={run_id}): left alone",
                    if kind == "secret" { &secret } else { &instance }
                );
            }
        }
        let reused = dep.is_some();
        (s, reused)
    };
    let password = match existing.as_ref().map(e2e_migrations::kube::credentials_from_secret) {
        Some(Ok(c)) => c.password,
        _ => e2e_migrations::secret::password()?,
    };
    let own_namespace = d.mode != NamespaceMode::Existing;
    let mut m = Manifests::new(d.pg, ns, &password, d.exposure, d.run, own_namespace);
    if let (Some(n), Some((_, labels))) = (&mut m.namespace, &d.checkout) {
        n.metadata.labels.get_or_insert_with(BTreeMap::new).extend(labels.clone());
    }
    if let Some(n) = &m.namespace {
        apply(&ns_api, n, Need::ApplyNamespaces, None, d.mode).await?;
    }
    apply(&secrets, &m.secret, Need::ApplySecrets, Some(ns), d.mode).await?;
    apply(&Api::namespaced(d.client.clone(), ns), &m.service, Need::ApplyServices, Some(ns), d.mode).await?;
    apply(&deployments, &m.deployment, Need::ApplyDeployments, Some(ns), d.mode).await?;
    Ok(Deployed { password, created_namespace, reused })
}

/// What the wait for the run's pod shows (pure): the newest pod that is not being deleted, its
/// phase and why it is not ready (`pod postgres-x: Pending, ContainerCreating`).
pub(crate) fn pod_wait_line(pods: &[Pod]) -> String {
    let newest = |p: &&Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
    let live: Vec<&Pod> = pods.iter().filter(|p| p.metadata.deletion_timestamp.is_none()).collect();
    let Some(pod) = live.iter().copied().max_by_key(newest).or_else(|| pods.iter().max_by_key(newest)) else {
        return "no pod yet".to_string();
    };
    let st = pod.status.as_ref();
    let phase = st.and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
    let mut why = Vec::new();
    if pod.metadata.deletion_timestamp.is_some() {
        why.push("being deleted".to_string());
    }
    for cs in st.and_then(|s| s.container_statuses.as_ref()).into_iter().flatten() {
        let state = cs.state.as_ref();
        if let Some(w) = state.and_then(|s| s.waiting.as_ref()) {
            why.push(w.reason.clone().unwrap_or_else(|| "waiting".to_string()));
        } else if let Some(t) = state.and_then(|s| s.terminated.as_ref()) {
            why.push(format!("terminated: {} (exit code {})", t.reason.as_deref().unwrap_or(""), t.exit_code));
        } else if !cs.ready {
            why.push("started, not ready yet".to_string());
        }
        if cs.restart_count > 0 {
            why.push(format!("restarted {} times", cs.restart_count));
        }
    }
    if why.is_empty() {
        // not scheduled, or no container status yet: the condition that is not met says why
        let unmet = st.and_then(|s| s.conditions.as_ref()).into_iter().flatten().find(|c| c.status != "True");
        if let Some(c) = unmet {
            let reason = c.reason.as_deref().unwrap_or(&c.type_);
            why.push(match c.message.as_deref().filter(|m| !m.is_empty()) {
                Some(m) => format!("{reason}: {m}"),
                None => reason.to_string(),
            });
        }
    }
    let mut line = format!("pod {}: {phase}", pod.name_any());
    for w in why {
        line.push_str(", ");
        line.push_str(&w);
    }
    line
}

/// Waits until the run's Deployment is ready and returns its ready pod; on a terminal, `step`
/// shows the pod's phase and what it waits for meanwhile. On timeout the error says what the
/// pods, the events and the log say.
pub(crate) async fn wait_ready(d: &Deploy<'_>, step: &Step) -> Result<String> {
    let (ns, run_id) = (d.namespace, d.run.run_id.as_str());
    let deployments: Api<Deployment> = Api::namespaced(d.client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(d.client.clone(), ns);
    let instance = instance_name(run_id);
    let selector = pod_selector(run_id);
    let timeout = Duration::from_secs(d.pg.ready_timeout_s);
    let ready = await_condition(deployments, &instance, |d: Option<&Deployment>| d.is_some_and(deployment_ready));
    // what the pod is doing, for the spinner only: a read that fails is left out
    let watch_pods = async {
        if !step.shows_detail() {
            return std::future::pending::<()>().await;
        }
        let lp = ListParams::default().labels(&selector);
        loop {
            if let Ok(list) = pods.list(&lp).await {
                step.detail(pod_wait_line(&list.items));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    let ready = async {
        tokio::select! {
            r = ready => r,
            () = watch_pods => unreachable!("the pods are watched until the deployment is ready"),
        }
    };
    match tokio::time::timeout(timeout, ready).await {
        Ok(r) => {
            r.map_err(|e| {
                let what = format!("watching deployment {instance} until it is ready");
                watch_error(e, Need::ListDeployments, Need::WatchDeployments, Some(ns), &what)
            })?;
        }
        Err(_) => {
            let diagnosis = diagnose(&d.client, ns, run_id).await;
            bail!(render_timeout(ns, d.pg.ready_timeout_s, &diagnosis, &d.cleanup));
        }
    }
    let list = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| api_error(e, Need::ListPods, Some(ns), "listing the PostgreSQL pods"))?;
    pick_ready_pod(&list.items)
        .with_context(|| format!("deployment {instance} is ready but no ready pod matches {selector}"))
}

/// Gathers the timeout error's facts; each part that cannot be read is left out.
async fn diagnose(client: &Client, namespace: &str, run_id: &str) -> Diagnosis {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let list =
        pods.list(&ListParams::default().labels(&pod_selector(run_id))).await.map(|l| l.items).unwrap_or_default();
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
    let events = recent_events(&events, &instance_name(run_id), EVENTS_SHOWN);
    Diagnosis { pods: list.iter().map(pod_report).collect(), events, log }
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

    const KUBE: NamespaceMode = NamespaceMode::Create;

    #[test]
    fn namespace_decisions() {
        let decide = |facts: &NamespaceFacts| decide_namespace("e2e", facts, "r1", KUBE, "--namespace", None);
        assert_eq!(decide(&NamespaceFacts::Missing), NamespaceAction::Create);
        let ours = labels(&[(MANAGED_BY_LABEL, MANAGED_BY), (RUN_ID_LABEL, "r1")]);
        assert_eq!(
            decide(&NamespaceFacts::Exists { labels: ours.clone(), terminating: false }),
            NamespaceAction::Reuse
        );
        assert_eq!(
            decide(&NamespaceFacts::Exists { labels: ours, terminating: true }),
            NamespaceAction::WaitThenCreate
        );
        // made before run ids: still ours
        let legacy = labels(&[(MANAGED_BY_LABEL, MANAGED_BY)]);
        assert_eq!(decide(&NamespaceFacts::Exists { labels: legacy, terminating: false }), NamespaceAction::Reuse);
    }

    #[test]
    fn a_namespace_setup_did_not_create_is_refused() {
        let facts = NamespaceFacts::Exists { labels: labels(&[("team", "payments")]), terminating: false };
        let NamespaceAction::Refuse(e) = decide_namespace("payments", &facts, "r1", KUBE, "--namespace", None) else {
            panic!("must refuse")
        };
        expect![[r#"namespace "payments" exists and was not created by e2e-setup (no label app.kubernetes.io/managed-by=e2e-migrations); setup never adopts it: pass another --namespace, or add --existing-namespace to work in it beside what is there (setup then owns only its own objects)"#]]
        .assert_eq(&e);
    }

    #[test]
    fn a_namespace_of_another_run_is_refused_on_a_shared_cluster_but_replaced_on_kind() {
        let theirs =
            labels(&[(MANAGED_BY_LABEL, MANAGED_BY), (RUN_ID_LABEL, "r2"), (CREATED_AT_LABEL, "20240615T120000Z")]);
        let facts = NamespaceFacts::Exists { labels: theirs, terminating: false };
        let NamespaceAction::Refuse(e) = decide_namespace("e2e-pr-1", &facts, "r1", KUBE, "--namespace", None) else {
            panic!("must refuse")
        };
        expect![[r#"namespace "e2e-pr-1" belongs to another e2e-setup run (r2, created 20240615T120000Z); its teardown would delete the namespace and this run with it: pass another --namespace, or add --existing-namespace to run beside it; if run r2 is gone, remove it: cargo xtask e2e-teardown --backend kube --context C --namespace e2e-pr-1"#]]
        .assert_eq(&e);
        assert_eq!(
            decide_namespace("e2e", &facts, "r1", NamespaceMode::Kind, "x", Some("a-1")),
            NamespaceAction::Reuse
        );
    }

    #[test]
    fn on_a_shared_kind_cluster_another_checkouts_namespace_is_refused() {
        let theirs = labels(&[(MANAGED_BY_LABEL, MANAGED_BY), (super::super::share::CHECKOUT_LABEL, "b-2")]);
        let facts = NamespaceFacts::Exists { labels: theirs, terminating: false };
        let NamespaceAction::Refuse(e) =
            decide_namespace("e2e-b-2", &facts, "r1", NamespaceMode::Kind, "--namespace", Some("a-1"))
        else {
            panic!("must refuse")
        };
        assert!(e.contains("belongs to another checkout (b-2)") && e.contains("pass another --namespace"), "{e}");
        assert_eq!(
            decide_namespace("e2e-b-2", &facts, "r1", NamespaceMode::Kind, "--namespace", Some("b-2")),
            NamespaceAction::Reuse
        );
    }

    #[test]
    fn only_objects_labelled_with_the_run_are_the_runs() {
        assert!(made_by_run(Some(&labels(&[(MANAGED_BY_LABEL, MANAGED_BY), (RUN_ID_LABEL, "r1")])), "r1"));
        assert!(!made_by_run(Some(&labels(&[(MANAGED_BY_LABEL, MANAGED_BY), (RUN_ID_LABEL, "r2")])), "r1"));
        assert!(!made_by_run(Some(&labels(&[(RUN_ID_LABEL, "r1")])), "r1"));
        assert!(!made_by_run(Some(&labels(&[])), "r1"));
        assert!(!made_by_run(None, "r1"));
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

    /// A pod made at second `made`, in `phase`, its one container `waiting` for a reason or
    /// running (ready or not).
    fn pod_at(name: &str, made: i64, phase: &str, waiting: Option<&str>, ready: bool, restarts: i32) -> Pod {
        let state = match waiting {
            Some(r) => ContainerState {
                waiting: Some(ContainerStateWaiting { reason: Some(r.into()), message: None }),
                ..ContainerState::default()
            },
            None => ContainerState::default(),
        };
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                creation_timestamp: Some(t(made)),
                ..ObjectMeta::default()
            },
            status: Some(PodStatus {
                phase: Some(phase.into()),
                container_statuses: Some(vec![ContainerStatus {
                    name: "postgres".into(),
                    ready,
                    restart_count: restarts,
                    state: Some(state),
                    ..ContainerStatus::default()
                }]),
                ..PodStatus::default()
            }),
            ..Pod::default()
        }
    }

    #[test]
    fn the_wait_for_ready_shows_the_newest_pods_phase_and_what_it_waits_for() {
        assert_eq!(pod_wait_line(&[]), "no pod yet");
        let creating = pod_at("postgres-r1-a", 10, "Pending", Some("ContainerCreating"), false, 0);
        assert_eq!(pod_wait_line(std::slice::from_ref(&creating)), "pod postgres-r1-a: Pending, ContainerCreating");
        let starting = pod_at("postgres-r1-b", 20, "Running", None, false, 0);
        assert_eq!(
            pod_wait_line(&[creating.clone(), starting.clone()]),
            "pod postgres-r1-b: Running, started, not ready yet",
            "the newest pod"
        );
        let crashing = pod_at("postgres-r1-c", 30, "Running", Some("CrashLoopBackOff"), false, 4);
        assert_eq!(
            pod_wait_line(&[crashing, starting.clone()]),
            "pod postgres-r1-c: Running, CrashLoopBackOff, restarted 4 times"
        );
        // an old pod being replaced is not the one to watch
        let mut going = pod_at("postgres-r1-d", 40, "Running", None, true, 0);
        going.metadata.deletion_timestamp = Some(t(41));
        assert_eq!(pod_wait_line(&[going.clone(), starting]), "pod postgres-r1-b: Running, started, not ready yet");
        assert_eq!(pod_wait_line(&[going]), "pod postgres-r1-d: Running, being deleted");
        // not scheduled yet: no container status, the condition says why
        let unscheduled = Pod {
            metadata: ObjectMeta { name: Some("postgres-r1-e".into()), ..ObjectMeta::default() },
            status: Some(PodStatus {
                phase: Some("Pending".into()),
                conditions: Some(vec![PodCondition {
                    type_: "PodScheduled".into(),
                    status: "False".into(),
                    reason: Some("Unschedulable".into()),
                    message: Some("0/1 nodes are available: 1 node(s) had untolerated taint".into()),
                    ..PodCondition::default()
                }]),
                ..PodStatus::default()
            }),
            ..Pod::default()
        };
        assert_eq!(
            pod_wait_line(&[unscheduled]),
            "pod postgres-r1-e: Pending, Unschedulable: 0/1 nodes are available: 1 node(s) had untolerated taint"
        );
        let bare = Pod { metadata: ObjectMeta { name: Some("p".into()), ..ObjectMeta::default() }, ..Pod::default() };
        assert_eq!(pod_wait_line(&[bare]), "pod p: Pending");
    }

    #[test]
    fn a_deploy_says_whether_it_made_or_reused_the_run() {
        let d = |reused, created_namespace| Deployed { password: String::new(), created_namespace, reused };
        assert_eq!(deployed_outcome(&d(false, true)), "created, namespace created");
        assert_eq!(deployed_outcome(&d(false, false)), "created");
        assert_eq!(deployed_outcome(&d(true, false)), "reused");
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
            events: recent_events(&events, "postgres-7d4b9", 10),
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
              postgres-7d4b9-xk2p has logged nothing
              hint: the node has no such image and postgres.image_pull_policy is Never: load the image into the node
              to remove what this setup made: cargo xtask e2e-teardown"#]]
        .assert_eq(&render_timeout("e2e", 180, &d, "cargo xtask e2e-teardown"));
    }

    #[test]
    fn a_root_image_without_a_uid_gets_a_hint() {
        let d = Diagnosis {
            pods: vec![PodReport {
                name: "p".into(),
                phase: "Pending".into(),
                conditions: vec![],
                containers: vec!["container postgres: waiting: CreateContainerConfigError container has runAsNonRoot and image will run as root (pod: \"p\")".into()],
            }],
            events: vec![],
            log: None,
        };
        let text = render_timeout("ns", 20, &d, "cargo xtask e2e-teardown");
        assert!(
            text.contains("\n  hint: the image's user is root and the pod names no uid: set postgres.run_as_user"),
            "{text}"
        );
        assert!(hints(&Diagnosis::default()).is_empty());
    }

    #[test]
    fn the_timeout_error_stays_short_counting_repeats_and_leaving_out_other_runs() {
        let event = |s: i64, name: &str, reason: &str, count: Option<i32>| Event {
            involved_object: ObjectReference {
                kind: Some("Pod".into()),
                name: Some(name.into()),
                ..ObjectReference::default()
            },
            reason: Some(reason.into()),
            message: Some(format!("{reason} happened")),
            last_timestamp: Some(t(s)),
            count,
            ..Event::default()
        };
        // the same failure reported 40 times as separate Event objects, 9 other reasons, and
        // another run's events in a shared namespace
        let mut events: Vec<Event> = (0..40).map(|i| event(100 + i, "postgres-r1-abc", "BackOff", None)).collect();
        events.extend((0..9).map(|i| event(i, "postgres-r1-abc", &format!("Step{i}"), Some(2))));
        events.push(event(500, "postgres-r2-xyz", "OtherRun", None));
        let lines = recent_events(&events, "postgres-r1", EVENTS_SHOWN);
        assert_eq!(lines.len(), EVENTS_SHOWN + 1, "{lines:#?}");
        assert_eq!(lines[0], "(4 older events not shown)");
        assert_eq!(lines.last().unwrap(), "Pod/postgres-r1-abc: BackOff: BackOff happened (x40)");
        assert!(lines.iter().all(|l| !l.contains("OtherRun")), "{lines:#?}");
        assert!(lines.contains(&"Pod/postgres-r1-abc: Step8: Step8 happened (x2)".to_string()), "{lines:#?}");
        let d = Diagnosis { events: lines, ..Diagnosis::default() };
        let text = render_timeout("ns", 20, &d, "cargo xtask e2e-teardown");
        assert!(text.lines().count() <= 14, "{text}");
        assert!(text.ends_with("\n  to remove what this setup made: cargo xtask e2e-teardown"), "{text}");
    }

    #[test]
    fn generated_passwords_are_long_and_differ() {
        let (a, b) = (e2e_migrations::secret::password().unwrap(), e2e_migrations::secret::password().unwrap());
        assert_eq!(a.len(), 48);
        assert_ne!(a, b);
    }
}
