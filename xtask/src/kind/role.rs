//! The shipped RBAC examples, `docs/rbac/role.yaml` and `docs/rbac/clusterrole.yaml`, rendered
//! from the library's table of needs (`e2e_migrations::kube::rbac`); a test keeps the files
//! equal to the rendering, so the documented Role is always the one the code needs.

use std::fmt::Write;

use e2e_migrations::kube::rbac::{rules, Need, Rule, Scope, CLUSTER_ROLE_NAME, ROLE_NAME};

/// What a right is used for, in a few words, for the Role's comments: which command or step
/// makes the call.
fn why(need: Need) -> &'static str {
    use Need::*;
    match need {
        GetSecrets => "setup and the tests read the password",
        ListSecrets | ListServices => "teardown and --stale find a run's objects by label",
        ApplySecrets | ApplyServices | ApplyDeployments | ApplyNamespaces => {
            "server-side apply (create for a new object, patch for an existing one)"
        }
        DeleteSecrets | DeleteServices | DeleteDeployments | DeleteNamespaces => "teardown",
        GetDeployments => "setup checks its deployment before applying",
        ListDeployments => "the readiness watch, teardown and --stale",
        WatchDeployments => "the readiness watch",
        ListPods => "find the ready pod; teardown waits until it is gone",
        PortForward => {
            "the port-forward; kube-rs upgrades to a WebSocket, which the API server authorizes as get, \
             and from Kubernetes 1.35 also as create (kubernetes/kubernetes#134577); SPDY is create"
        }
        GetPodsLog => "the readiness-timeout diagnosis",
        ListEvents => "the readiness-timeout diagnosis",
        GetNamespaces => "setup checks the namespace it creates",
        ListNamespaces => "--stale --all-namespaces; teardown waits until it is gone",
        WatchNamespaces => "teardown waits until it is gone",
    }
}

fn rule_yaml(out: &mut String, rule: &Rule) {
    let group = if rule.group.is_empty() { "core".to_string() } else { rule.group.to_string() };
    writeln!(out, "# {} ({group} API group)", rule.resource).expect("a String");
    for need in Need::ALL {
        let verbs: Vec<&str> = need
            .rights()
            .iter()
            .filter(|r| r.group == rule.group && r.resource == rule.resource)
            .map(|r| r.verb)
            .collect();
        if !verbs.is_empty() {
            writeln!(out, "#   {}: {}", verbs.join(", "), why(need)).expect("a String");
        }
    }
    writeln!(out, "- apiGroups: [\"{}\"]", rule.group).expect("a String");
    writeln!(out, "  resources: [\"{}\"]", rule.resource).expect("a String");
    let verbs: Vec<String> = rule.verbs.iter().map(|v| format!("\"{v}\"")).collect();
    writeln!(out, "  verbs: [{}]", verbs.join(", ")).expect("a String");
}

/// `docs/rbac/role.yaml`: the Role, a ServiceAccount and the RoleBinding, in namespace
/// `NAMESPACE` (a placeholder the reader replaces).
pub(crate) fn role_yaml() -> String {
    let mut out = String::from(
        "# The rights that `cargo xtask e2e-setup --backend kube --namespace NAMESPACE --existing-namespace`,\n\
         # the service tests (e2e_migrations::kube, TestDatabase) and `cargo xtask e2e-teardown` need in a\n\
         # namespace that someone else made, and nothing more: no cluster-scoped right, nothing in any other\n\
         # namespace. `e2e-teardown --stale AGE --namespace NAMESPACE` needs no more either.\n\
         # Generated from crates/e2e-migrations/src/kube/rbac.rs; a test keeps this file in step with it.\n\
         #\n\
         # Give it to a CI job (replace NAMESPACE):\n\
         #   sed 's/NAMESPACE/team-a/g' docs/rbac/role.yaml | kubectl apply -f -\n\
         # then make a kubeconfig with the ServiceAccount's token (docs/kind.md shows how).\n",
    );
    writeln!(out, "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: {ROLE_NAME}\n  namespace: NAMESPACE\nrules:")
        .expect("a String");
    for rule in rules(Scope::Namespace) {
        rule_yaml(&mut out, &rule);
    }
    writeln!(
        out,
        "---\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: {ROLE_NAME}\n  namespace: NAMESPACE\n\
         ---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: {ROLE_NAME}\n  namespace: NAMESPACE\n\
         roleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: Role\n  name: {ROLE_NAME}\n\
         subjects:\n- kind: ServiceAccount\n  name: {ROLE_NAME}\n  namespace: NAMESPACE"
    )
    .expect("a String");
    out
}

/// `docs/rbac/clusterrole.yaml`: what setup needs when it creates its own namespace (the
/// default), and what `e2e-teardown --stale AGE --all-namespaces` needs.
pub(crate) fn cluster_role_yaml() -> String {
    let mut out = String::from(
        "# The rights that `cargo xtask e2e-setup --backend kube --namespace N` (setup creates N, teardown\n\
         # deletes it) and `cargo xtask e2e-teardown --stale AGE --all-namespaces` (a cleanup job) need.\n\
         # Setup works in a namespace it has just created, so the namespaced rights are granted\n\
         # cluster-wide here. Where that is too much, make the namespace beforehand, bind the Role of\n\
         # docs/rbac/role.yaml in it, and use --existing-namespace.\n\
         # Generated from crates/e2e-migrations/src/kube/rbac.rs; a test keeps this file in step with it.\n\
         #\n\
         #   sed 's/SUBJECT_NAMESPACE/ci/g' docs/rbac/clusterrole.yaml | kubectl apply -f -\n",
    );
    writeln!(
        out,
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: {CLUSTER_ROLE_NAME}\nrules:"
    )
    .expect("a String");
    for rule in rules(Scope::Cluster) {
        rule_yaml(&mut out, &rule);
    }
    writeln!(
        out,
        "---\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: {CLUSTER_ROLE_NAME}\n  namespace: SUBJECT_NAMESPACE\n\
         ---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: {CLUSTER_ROLE_NAME}\n\
         roleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: {CLUSTER_ROLE_NAME}\n\
         subjects:\n- kind: ServiceAccount\n  name: {CLUSTER_ROLE_NAME}\n  namespace: SUBJECT_NAMESPACE"
    )
    .expect("a String");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::rbac::v1::{ClusterRole, Role};

    #[test]
    fn the_shipped_role_files_are_the_rendered_ones() {
        expect_test::expect_file!["../../../docs/rbac/role.yaml"].assert_eq(&role_yaml());
        expect_test::expect_file!["../../../docs/rbac/clusterrole.yaml"].assert_eq(&cluster_role_yaml());
    }

    #[test]
    fn the_readme_shows_the_shipped_role() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
        let start = readme
            .find("```yaml\napiVersion: rbac.authorization.k8s.io/v1\nkind: Role\n")
            .expect("a Role in the README");
        let block = &readme[start + "```yaml\n".len()..];
        let block = &block[..block.find("```").unwrap()];
        let role: Role = serde_yaml::from_str(block).unwrap();
        let shown: Vec<(String, String, Vec<String>)> = role
            .rules
            .unwrap()
            .into_iter()
            .map(|r| (r.api_groups.unwrap()[0].clone(), r.resources.unwrap()[0].clone(), r.verbs))
            .collect();
        let shipped: Vec<(String, String, Vec<String>)> = rules(Scope::Namespace)
            .into_iter()
            .map(|r| (r.group.to_string(), r.resource.to_string(), r.verbs.iter().map(|v| v.to_string()).collect()))
            .collect();
        assert_eq!(shown, shipped, "README.md's Role differs from docs/rbac/role.yaml");
    }

    fn first_doc(yaml: &str) -> &str {
        yaml.split("\n---\n").next().unwrap()
    }

    #[test]
    fn the_role_yaml_is_a_role_with_every_namespaced_need_and_nothing_cluster_wide() {
        let role: Role = serde_yaml::from_str(first_doc(&role_yaml())).unwrap();
        assert_eq!(role.metadata.namespace.as_deref(), Some("NAMESPACE"));
        let granted: Vec<(String, String, String)> = role
            .rules
            .unwrap()
            .iter()
            .flat_map(|r| {
                let group = r.api_groups.clone().unwrap()[0].clone();
                let resource = r.resources.clone().unwrap()[0].clone();
                r.verbs.iter().map(move |v| (group.clone(), resource.clone(), v.clone())).collect::<Vec<_>>()
            })
            .collect();
        for need in Need::ALL {
            for r in need.rights() {
                let has = granted.contains(&(r.group.into(), r.resource.into(), r.verb.into()));
                assert_eq!(has, r.scope == Scope::Namespace, "{need:?}");
            }
        }
        let cluster: ClusterRole = serde_yaml::from_str(first_doc(&cluster_role_yaml())).unwrap();
        assert_eq!(cluster.rules.unwrap().len(), rules(Scope::Cluster).len());
    }
}
