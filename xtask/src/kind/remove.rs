//! Removing what setup made on a cluster, and nothing else: a run's labelled objects, a namespace
//! that setup created, runs left behind on a Kind cluster, and stale runs (`--stale`). Every
//! object is selected by our labels and deleted with its uid as a precondition, so an object
//! made since under the same name is never touched.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use chrono::{DateTime, Utc};
use e2e_migrations::kube::rbac::{self, Need};
use e2e_migrations::kube::{managed_selector, pod_selector, run_selector, MANAGED_BY, MANAGED_BY_LABEL, RUN_ID_LABEL};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, Service};
use kube::api::{DeleteParams, ListParams, Preconditions};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use super::deploy::api_error;
use super::stale::{Found, Kind};

/// Where to look: one namespace, or all of them (a cluster-wide cleanup).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope<'a> {
    /// This namespace (a Role there is enough).
    Namespace(&'a str),
    /// Every namespace (needs the ClusterRole).
    All,
}

fn api<K>(client: &Client, scope: Scope<'_>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match scope {
        Scope::Namespace(ns) => Api::namespaced(client.clone(), ns),
        Scope::All => Api::all(client.clone()),
    }
}

fn place(scope: Scope<'_>) -> Option<&str> {
    match scope {
        Scope::Namespace(ns) => Some(ns),
        Scope::All => None,
    }
}

/// An object as the stale decision sees it.
pub(crate) fn found<K: Resource + ResourceExt>(kind: Kind, o: &K) -> Found {
    let meta = o.meta();
    Found {
        kind,
        namespace: if kind == Kind::Namespace { o.name_any() } else { meta.namespace.clone().unwrap_or_default() },
        name: o.name_any(),
        labels: meta.labels.clone().unwrap_or_default(),
        annotations: meta.annotations.clone().unwrap_or_default(),
        created: meta
            .creation_timestamp
            .as_ref()
            .and_then(|t| DateTime::<Utc>::from_timestamp(t.0.as_second(), t.0.subsec_nanosecond().max(0) as u32)),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
    }
}

async fn list<K>(api: &Api<K>, selector: &str, kind: Kind, need: Need, ns: Option<&str>) -> Result<Vec<Found>>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let what = format!("finding the {}s e2e-setup made", kind.word());
    let items = api.list(&ListParams::default().labels(selector)).await.map_err(|e| api_error(e, need, ns, &what))?;
    // an object already being deleted is on its way out: not found again
    Ok(items.items.iter().filter(|o| o.meta().deletion_timestamp.is_none()).map(|o| found(kind, o)).collect())
}

/// The Deployments, Services and Secrets with `selector` in `scope` (pure data back).
pub(crate) async fn find(client: &Client, scope: Scope<'_>, selector: &str) -> Result<Vec<Found>> {
    let ns = place(scope);
    let mut all =
        list(&api::<Deployment>(client, scope), selector, Kind::Deployment, Need::ListDeployments, ns).await?;
    all.extend(list(&api::<Service>(client, scope), selector, Kind::Service, Need::ListServices, ns).await?);
    all.extend(list(&api::<Secret>(client, scope), selector, Kind::Secret, Need::ListSecrets, ns).await?);
    Ok(all)
}

/// The namespaces labelled as made by e2e-setup (cluster-wide).
pub(crate) async fn find_namespaces(client: &Client) -> Result<Vec<Found>> {
    let api: Api<Namespace> = Api::all(client.clone());
    list(&api, &managed_selector(), Kind::Namespace, Need::ListNamespaces, None).await
}

/// What a delete did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Deleted (or being deleted).
    Deleted,
    /// Already gone.
    Gone,
    /// Changed since it was listed (a precondition failed): kept.
    Changed,
}

async fn delete_one<K>(api: &Api<K>, o: &Found, need: Need, dp: &DeleteParams) -> Result<Outcome>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let ns = (o.kind != Kind::Namespace).then_some(o.namespace.as_str());
    match api.delete(&o.name, dp).await {
        Ok(_) => Ok(Outcome::Deleted),
        Err(e) if rbac::is_not_found(&e) => Ok(Outcome::Gone),
        Err(e) if rbac::is_conflict(&e) => Ok(Outcome::Changed),
        Err(e) => Err(api_error(e, need, ns, &format!("deleting {} {}", o.kind.word(), o.name))),
    }
}

/// Deletes `o` (a Deployment in the foreground, so its pod goes first). The uid is always a
/// precondition; `unchanged` adds the resource version (a stale run renewed since is kept).
pub(crate) async fn delete(client: &Client, o: &Found, unchanged: bool) -> Result<Outcome> {
    let pre = Preconditions {
        uid: o.uid.clone(),
        resource_version: if unchanged { o.resource_version.clone() } else { None },
    };
    let dp = DeleteParams { preconditions: Some(pre), ..DeleteParams::default() };
    let ns = o.namespace.as_str();
    match o.kind {
        Kind::Namespace => {
            let api: Api<Namespace> = Api::all(client.clone());
            delete_one(&api, o, Need::DeleteNamespaces, &dp).await
        }
        Kind::Deployment => {
            let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
            let fg = DeleteParams { propagation_policy: Some(kube::api::PropagationPolicy::Foreground), ..dp };
            delete_one(&api, o, Need::DeleteDeployments, &fg).await
        }
        Kind::Service => {
            delete_one(&Api::<Service>::namespaced(client.clone(), ns), o, Need::DeleteServices, &dp).await
        }
        Kind::Secret => delete_one(&Api::<Secret>::namespaced(client.clone(), ns), o, Need::DeleteSecrets, &dp).await,
    }
}

/// What removing a run found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RunRemoved {
    /// `kind name` of each object deleted.
    pub(crate) deleted: Vec<String>,
}

/// Deletes run `run_id`'s objects in `namespace` (only those labelled with it; never the
/// namespace) and waits until its Deployment and pods are gone.
pub(crate) async fn delete_run(
    client: &Client,
    namespace: &str,
    run_id: &str,
    timeout: Duration,
) -> Result<RunRemoved> {
    let objects = find(client, Scope::Namespace(namespace), &run_selector(run_id)).await?;
    let mut deleted = Vec::new();
    for o in &objects {
        if delete(client, o, false).await? == Outcome::Deleted {
            deleted.push(format!("{} {}", o.kind.word(), o.name));
        }
    }
    let start = Instant::now();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    loop {
        let left_d = deployments.list(&ListParams::default().labels(&run_selector(run_id))).await.map_err(|e| {
            api_error(e, Need::ListDeployments, Some(namespace), "waiting until the deployment is gone")
        })?;
        let left_p = pods
            .list(&ListParams::default().labels(&pod_selector(run_id)))
            .await
            .map_err(|e| api_error(e, Need::ListPods, Some(namespace), "waiting until the pod is gone"))?;
        if left_d.items.is_empty() && left_p.items.is_empty() {
            return Ok(RunRemoved { deleted });
        }
        if start.elapsed() > timeout {
            bail!(
                "run {run_id} in namespace {namespace}: still {} deployment(s) and {} pod(s) after {} s; check their finalizers",
                left_d.items.len(),
                left_p.items.len(),
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The run ids present in `namespace` (for an error that lists them).
pub(crate) async fn runs_in(client: &Client, namespace: &str) -> Result<Vec<String>> {
    let mut runs: Vec<String> = find(client, Scope::Namespace(namespace), &managed_selector())
        .await?
        .into_iter()
        .filter_map(|o| o.labels.get(RUN_ID_LABEL).cloned())
        .collect();
    runs.sort();
    runs.dedup();
    Ok(runs)
}

/// Kind: deletes what e2e-setup left in our cluster's namespace under other runs (a state that
/// was lost), so that the NodePort is free for this run. Returns what it did, for the log.
pub(crate) async fn remove_other_runs(client: &Client, namespace: &str, run_id: &str) -> Result<Vec<String>> {
    let mut lines = Vec::new();
    for o in find(client, Scope::Namespace(namespace), &managed_selector()).await? {
        if o.labels.get(RUN_ID_LABEL).map(String::as_str) == Some(run_id) {
            continue;
        }
        if delete(client, &o, false).await? == Outcome::Deleted {
            let run = o.labels.get(RUN_ID_LABEL).map(String::as_str).unwrap_or("from before run ids");
            lines.push(format!("removed {} {} of an earlier run ({run}) whose state is gone", o.kind.word(), o.name));
        }
    }
    Ok(lines)
}

/// What teardown found where the namespace should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Deleted {
    /// Deleted (and gone).
    Deleted,
    /// There was none.
    Missing,
}

/// Decides whether teardown may delete a namespace with `labels` (pure): only one labelled as
/// made by e2e-setup, and, when the run is known, made for that run (or before run ids).
pub(crate) fn may_delete_namespace(
    namespace: &str,
    labels: &BTreeMap<String, String>,
    run_id: Option<&str>,
) -> std::result::Result<(), String> {
    if labels.get(MANAGED_BY_LABEL).map(String::as_str) != Some(MANAGED_BY) {
        return Err(format!(
            "namespace {namespace:?} was not created by e2e-setup (no label {MANAGED_BY_LABEL}={MANAGED_BY}): left alone"
        ));
    }
    match (labels.get(RUN_ID_LABEL), run_id) {
        (Some(theirs), Some(ours)) if theirs != ours => Err(format!(
            "namespace {namespace:?} belongs to run {theirs}, not to this checkout's run {ours}: left alone \
             (to remove it anyway: e2e-teardown --backend kube --context C --namespace {namespace} --run-id {theirs})"
        )),
        _ => Ok(()),
    }
}

/// Deletes `namespace` if e2e-setup made it (for `run_id`, when known), and waits until it is gone.
pub(crate) async fn delete_namespace(
    client: &Client,
    namespace: &str,
    run_id: Option<&str>,
    timeout: Duration,
) -> Result<Deleted> {
    let deleted = request_namespace_delete(client, namespace, run_id, None).await?;
    if deleted == Deleted::Deleted {
        wait_namespace_gone(&Api::all(client.clone()), namespace, timeout).await?;
    }
    Ok(deleted)
}

/// Asks for `namespace` to be deleted if e2e-setup made it (for `run_id`, when known; on a
/// shared Kind cluster, for `checkout`), without waiting until it is gone.
pub(crate) async fn request_namespace_delete(
    client: &Client,
    namespace: &str,
    run_id: Option<&str>,
    checkout: Option<&str>,
) -> Result<Deleted> {
    let api: Api<Namespace> = Api::all(client.clone());
    let what = format!("reading namespace {namespace}");
    let Some(ns) = api.get_opt(namespace).await.map_err(|e| api_error(e, Need::GetNamespaces, None, &what))? else {
        return Ok(Deleted::Missing);
    };
    let labels = ns.labels().clone();
    if let Err(e) = may_delete_namespace(namespace, &labels, run_id) {
        bail!(e);
    }
    if let (Some(me), Some(theirs)) = (checkout, labels.get(super::share::CHECKOUT_LABEL)) {
        if me != theirs {
            bail!(
                "namespace {namespace:?} belongs to another checkout ({theirs}) of the shared Kind cluster: left alone"
            );
        }
    }
    if ns.metadata.deletion_timestamp.is_none() {
        let pre = Preconditions { uid: ns.metadata.uid.clone(), resource_version: None };
        let dp = DeleteParams { preconditions: Some(pre), ..DeleteParams::background() };
        api.delete(namespace, &dp)
            .await
            .map_err(|e| api_error(e, Need::DeleteNamespaces, None, &format!("deleting namespace {namespace}")))?;
    }
    Ok(Deleted::Deleted)
}

/// Waits (watch) until `namespace` is gone.
pub(crate) async fn wait_namespace_gone(api: &Api<Namespace>, namespace: &str, timeout: Duration) -> Result<()> {
    let what = format!("waiting until namespace {namespace} is gone");
    let Some(ns) = api.get_opt(namespace).await.map_err(|e| api_error(e, Need::GetNamespaces, None, &what))? else {
        return Ok(());
    };
    let uid = ns.metadata.uid.clone().unwrap_or_default();
    let gone = await_condition(api.clone(), namespace, conditions::is_deleted(&uid));
    match tokio::time::timeout(timeout, gone).await {
        Ok(r) => {
            r.map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
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

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn teardown_deletes_only_a_namespace_made_for_its_run() {
        let ours = labels(&[(MANAGED_BY_LABEL, MANAGED_BY), (RUN_ID_LABEL, "r1")]);
        assert_eq!(may_delete_namespace("n", &ours, Some("r1")), Ok(()));
        assert_eq!(may_delete_namespace("n", &ours, None), Ok(()), "named by hand, no state");
        let e = may_delete_namespace("n", &ours, Some("r2")).unwrap_err();
        assert!(e.starts_with("namespace \"n\" belongs to run r1, not to this checkout's run r2: left alone"), "{e}");
        let legacy = labels(&[(MANAGED_BY_LABEL, MANAGED_BY)]);
        assert_eq!(may_delete_namespace("n", &legacy, Some("r2")), Ok(()));
        let e = may_delete_namespace("team", &labels(&[("team", "a")]), Some("r1")).unwrap_err();
        assert!(e.contains("was not created by e2e-setup"), "{e}");
    }
}
