//! The Kubernetes rights that setup, the tests and teardown need, one entry per API call kind, and
//! the errors that name the missing right and the Role that grants it (pure).
//!
//! [`Need::ALL`] is the single source of the shipped Role (`docs/rbac/role.yaml`) and ClusterRole
//! (`docs/rbac/clusterrole.yaml`): xtask renders them from it and a test compares the files, so a
//! new API call cannot be added without the documented Role growing with it.

use super::error::{KubeCause, KubeError};

/// Where a right must be granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// In the namespace setup works in: the Role (`docs/rbac/role.yaml`).
    Namespace,
    /// Cluster-wide: only for a namespace that setup creates and deletes itself, and for a
    /// cleanup across all namespaces: the ClusterRole (`docs/rbac/clusterrole.yaml`).
    Cluster,
}

/// One right: a verb on a resource (in an API group).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Right {
    /// The API group (`""` for the core group).
    pub group: &'static str,
    /// The resource, with its subresource (`pods/portforward`).
    pub resource: &'static str,
    /// The verb.
    pub verb: &'static str,
    /// Where it is granted.
    pub scope: Scope,
}

/// Every kind of API call the kube backend makes. Each call site names its need, so a refusal
/// says which verb on which resource was missing and where it is granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Setup and the tests read the credentials Secret.
    GetSecrets,
    /// Teardown and the stale cleanup find a run's Secret by its labels.
    ListSecrets,
    /// Setup applies the Secret: server-side apply is a patch, and the API server also checks
    /// `create` when the object does not exist yet.
    ApplySecrets,
    /// Teardown deletes the Secret.
    DeleteSecrets,
    /// Teardown and the stale cleanup find a run's Service by its labels.
    ListServices,
    /// Setup applies the Service (create and patch).
    ApplyServices,
    /// Teardown deletes the Service.
    DeleteServices,
    /// Setup reads its Deployment back (reuse, ownership).
    GetDeployments,
    /// Setup's readiness watch (list then watch), teardown and the stale cleanup find runs.
    ListDeployments,
    /// Setup's readiness watch.
    WatchDeployments,
    /// Setup applies the Deployment (create and patch).
    ApplyDeployments,
    /// Teardown deletes the Deployment (its ReplicaSet and pod go with it).
    DeleteDeployments,
    /// Setup and the tests find the ready PostgreSQL pod; teardown waits until it is gone.
    ListPods,
    /// The port-forward: a WebSocket upgrade (kube-rs) is a GET, authorized as `get`, and from
    /// Kubernetes 1.35 also as `create`; over SPDY (older kubectl) it is `create`.
    PortForward,
    /// The readiness-timeout diagnosis reads the container's last log lines.
    GetPodsLog,
    /// The readiness-timeout diagnosis lists the namespace's events.
    ListEvents,
    /// Setup without `--existing-namespace` checks the namespace it will own.
    GetNamespaces,
    /// Setup without `--existing-namespace` creates its namespace (server-side apply: create
    /// and patch).
    ApplyNamespaces,
    /// Teardown of a namespace setup created.
    DeleteNamespaces,
    /// Teardown waits until the namespace is gone; `--stale --all-namespaces` finds ours.
    ListNamespaces,
    /// Teardown waits (watch) until the namespace is gone.
    WatchNamespaces,
}

impl Need {
    /// Every need, in the order the Role lists them.
    pub const ALL: [Need; 21] = [
        Need::GetSecrets,
        Need::ListSecrets,
        Need::ApplySecrets,
        Need::DeleteSecrets,
        Need::ListServices,
        Need::ApplyServices,
        Need::DeleteServices,
        Need::GetDeployments,
        Need::ListDeployments,
        Need::WatchDeployments,
        Need::ApplyDeployments,
        Need::DeleteDeployments,
        Need::ListPods,
        Need::PortForward,
        Need::GetPodsLog,
        Need::ListEvents,
        Need::GetNamespaces,
        Need::ApplyNamespaces,
        Need::DeleteNamespaces,
        Need::ListNamespaces,
        Need::WatchNamespaces,
    ];

    /// The rights this need takes: one verb, or `create` and `patch` for a server-side apply.
    pub fn rights(self) -> Vec<Right> {
        use Need::*;
        let (group, resource, verbs): (&str, &str, &[&'static str]) = match self {
            GetSecrets => ("", "secrets", &["get"]),
            ListSecrets => ("", "secrets", &["list"]),
            ApplySecrets => ("", "secrets", &["create", "patch"]),
            DeleteSecrets => ("", "secrets", &["delete"]),
            ListServices => ("", "services", &["list"]),
            ApplyServices => ("", "services", &["create", "patch"]),
            DeleteServices => ("", "services", &["delete"]),
            GetDeployments => ("apps", "deployments", &["get"]),
            ListDeployments => ("apps", "deployments", &["list"]),
            WatchDeployments => ("apps", "deployments", &["watch"]),
            ApplyDeployments => ("apps", "deployments", &["create", "patch"]),
            DeleteDeployments => ("apps", "deployments", &["delete"]),
            ListPods => ("", "pods", &["list"]),
            PortForward => ("", "pods/portforward", &["get", "create"]),
            GetPodsLog => ("", "pods/log", &["get"]),
            ListEvents => ("", "events", &["list"]),
            GetNamespaces => ("", "namespaces", &["get"]),
            ApplyNamespaces => ("", "namespaces", &["create", "patch"]),
            DeleteNamespaces => ("", "namespaces", &["delete"]),
            ListNamespaces => ("", "namespaces", &["list"]),
            WatchNamespaces => ("", "namespaces", &["watch"]),
        };
        let scope = if resource == "namespaces" { Scope::Cluster } else { Scope::Namespace };
        verbs.iter().map(|&verb| Right { group, resource, verb, scope }).collect()
    }
}

/// One rule of a Role: a group, a resource and its verbs (in [`Need::ALL`] order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The API group.
    pub group: &'static str,
    /// The resource.
    pub resource: &'static str,
    /// The verbs.
    pub verbs: Vec<&'static str>,
}

/// The rules for `scope`: the Role's (namespaced needs) or the ClusterRole's (all needs) (pure).
pub fn rules(scope: Scope) -> Vec<Rule> {
    let mut rules: Vec<Rule> = Vec::new();
    for right in Need::ALL.iter().flat_map(|n| n.rights()).filter(|r| r.scope <= scope) {
        match rules.iter_mut().find(|r| r.group == right.group && r.resource == right.resource) {
            Some(rule) => rule.verbs.push(right.verb),
            None => rules.push(Rule { group: right.group, resource: right.resource, verbs: vec![right.verb] }),
        }
    }
    rules
}

/// The name of the Role in `docs/rbac/role.yaml`.
pub const ROLE_NAME: &str = "e2e-migrations";

/// The name of the ClusterRole in `docs/rbac/clusterrole.yaml`.
pub const CLUSTER_ROLE_NAME: &str = "e2e-migrations-namespaces";

/// Where a refused right is granted, for messages: the Role for a call in a namespace, the
/// ClusterRole for a cluster-scoped resource or a call across all namespaces.
pub fn granted_by(right: &Right, namespace: Option<&str>) -> String {
    let scope = if namespace.is_none() { Scope::Cluster } else { right.scope };
    let rule = rules(scope)
        .into_iter()
        .find(|r| r.group == right.group && r.resource == right.resource)
        .map(|r| format!("apiGroups [\"{}\"], resources [{}], verbs [{}]", r.group, r.resource, r.verbs.join(", ")))
        .unwrap_or_default();
    match (scope, right.scope) {
        (Scope::Namespace, _) => format!("the Role {ROLE_NAME} in docs/rbac/role.yaml grants it (rule: {rule})"),
        (Scope::Cluster, Scope::Cluster) => format!(
            "the ClusterRole {CLUSTER_ROLE_NAME} in docs/rbac/clusterrole.yaml grants it (rule: {rule}); \
             without cluster rights, work in a namespace made for you, with the Role {ROLE_NAME} in \
             docs/rbac/role.yaml bound there"
        ),
        (Scope::Cluster, Scope::Namespace) => format!(
            "across all namespaces only the ClusterRole {CLUSTER_ROLE_NAME} in docs/rbac/clusterrole.yaml grants it \
             (rule: {rule}); with the Role {ROLE_NAME} in docs/rbac/role.yaml, work in one namespace"
        ),
    }
}

/// The words for where a call went: `in namespace N` or `cluster-wide`.
fn place(namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) => format!("in namespace {ns}"),
        None => "cluster-wide".to_string(),
    }
}

/// A call of `need` as messages say it: its verbs, its resource and where
/// (`create and patch secrets in namespace team-a`).
pub fn call(need: Need, namespace: Option<&str>) -> String {
    let rights = need.rights();
    let verbs = rights.iter().map(|r| r.verb).collect::<Vec<_>>().join(" and ");
    format!("{verbs} {} {}", rights[0].resource, place(namespace))
}

/// Explains an API error for `need` (pure): a refusal (403) becomes [`KubeError::Forbidden`],
/// which names the verbs, the resource, the namespace and the Role that grants them, then what
/// the API server said; another error becomes [`KubeError::Api`], which says what was being done.
pub fn explain(err: kube::Error, need: Need, namespace: Option<&str>, what: &str) -> KubeError {
    let (doing, namespace) = (what.to_string(), namespace.map(str::to_string));
    if let kube::Error::Api(status) = &err {
        if status.is_forbidden() {
            let said = status.message.trim_end().trim_end_matches(':').to_string();
            return KubeError::Forbidden { doing, need, namespace, said };
        }
    }
    KubeError::Api { doing, need, namespace, source: KubeCause(err) }
}

/// Whether `err` is the API server's 404.
pub fn is_not_found(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(s) if s.is_not_found())
}

/// Whether `err` is the API server's 403.
pub fn is_forbidden(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(s) if s.is_forbidden())
}

/// Whether `err` is the API server's 409 (a precondition or a write raced another).
pub fn is_conflict(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(s) if s.is_conflict())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    fn forbidden(message: &str) -> kube::Error {
        kube::Error::Api(Status::failure(message, "Forbidden").with_code(403).boxed())
    }

    #[test]
    fn a_refusal_names_the_verb_the_resource_and_the_role() {
        let server = r#"secrets "postgres-1a2b3c4d-credentials" is forbidden: User "system:serviceaccount:team-a:ci" cannot patch resource "secrets" in API group "" in the namespace "team-a""#;
        let e = explain(
            forbidden(server),
            Need::DeleteSecrets,
            Some("team-a"),
            "deleting secret postgres-1a2b3c4d-credentials",
        );
        expect_test::expect![[r#"deleting secret postgres-1a2b3c4d-credentials: not allowed to delete secrets in namespace team-a: the Role e2e-migrations in docs/rbac/role.yaml grants it (rule: apiGroups [""], resources [secrets], verbs [get, list, create, patch, delete]); the API server said: secrets "postgres-1a2b3c4d-credentials" is forbidden: User "system:serviceaccount:team-a:ci" cannot patch resource "secrets" in API group "" in the namespace "team-a""#]]
        .assert_eq(&e.to_string());
    }

    #[test]
    fn a_refused_apply_names_create_and_patch_even_when_the_server_says_little() {
        // 1.20 refuses a server-side apply that would create the object without a reason
        let server = r#"secrets "postgres-0d78f318-credentials" is forbidden: "#;
        let e = explain(forbidden(server), Need::ApplySecrets, Some("team-a"), "server-side apply of Secret s");
        let text = e.to_string();
        assert!(text.starts_with("server-side apply of Secret s: not allowed to create and patch secrets in namespace team-a: the Role e2e-migrations in docs/rbac/role.yaml grants it"), "{text}");
        assert!(
            text.ends_with(r#"the API server said: secrets "postgres-0d78f318-credentials" is forbidden"#),
            "{text}"
        );
    }

    #[test]
    fn a_refused_namespace_points_at_the_cluster_role_and_at_a_namespace_made_for_you() {
        let e = explain(forbidden("namespaces is forbidden"), Need::ApplyNamespaces, None, "creating namespace e2e-1");
        let text = e.to_string();
        assert!(text.starts_with("creating namespace e2e-1: not allowed to create and patch namespaces cluster-wide: the ClusterRole e2e-migrations-namespaces in docs/rbac/clusterrole.yaml grants it"), "{text}");
        assert!(text.contains("without cluster rights, work in a namespace made for you, with the Role"), "{text}");
        assert!(matches!(e, KubeError::Forbidden { need: Need::ApplyNamespaces, namespace: None, .. }));
    }

    #[test]
    fn a_refused_call_across_all_namespaces_points_at_the_cluster_role() {
        let e = explain(forbidden("deployments.apps is forbidden"), Need::ListDeployments, None, "finding runs");
        let text = e.to_string();
        assert!(text.starts_with("finding runs: not allowed to list deployments cluster-wide: across all namespaces only the ClusterRole e2e-migrations-namespaces"), "{text}");
        assert!(text.ends_with("work in one namespace; the API server said: deployments.apps is forbidden"), "{text}");
    }

    #[test]
    fn other_errors_say_what_was_being_done_without_claiming_a_missing_right() {
        let gone = kube::Error::Api(Status::failure("namespaces \"x\" not found", "NotFound").with_code(404).boxed());
        assert!(is_not_found(&gone) && !is_forbidden(&gone));
        let text = crate::error::report(&explain(gone, Need::GetSecrets, Some("x"), "reading secret s"));
        assert!(text.starts_with("reading secret s (get secrets in namespace x): "), "{text}");
        assert!(!text.contains("not allowed"), "{text}");
    }

    #[test]
    fn the_role_holds_only_namespaced_rights_and_the_cluster_role_adds_namespaces() {
        let role = rules(Scope::Namespace);
        assert!(role.iter().all(|r| r.resource != "namespaces"));
        let cluster = rules(Scope::Cluster);
        let ns = cluster.iter().find(|r| r.resource == "namespaces").expect("namespaces rule");
        assert_eq!(ns.verbs, ["get", "create", "patch", "delete", "list", "watch"]);
        assert_eq!(cluster.len(), role.len() + 1);
        // every need is in a rule of its scope
        for need in Need::ALL {
            for r in need.rights() {
                let rules = rules(r.scope);
                assert!(rules.iter().any(|x| x.resource == r.resource && x.verbs.contains(&r.verb)), "{need:?}");
            }
        }
    }
}
