//! What can go wrong reaching PostgreSQL in a Kubernetes namespace: the kubeconfig, the API
//! server's answers, the run and its Secret and pod, and the port-forward.
//!
//! Each variant carries what it is about (namespace, pod, secret, the API call's need) as data.
//! Messages say what is wrong in the library's terms and never name a command-line flag or
//! command: the library is also called from test crates, and xtask adds its own hints (which
//! command sets up, which flag picks the context or the namespace).

use std::path::PathBuf;

use super::rbac::{self, Need};
use super::{managed_selector, pod_selector, RUN_ID_ENV};

/// What a run id must be (see [`super::check_run_id`]).
pub const RUN_ID_RULE: &str = "use 1-32 lower-case letters, digits and '-', starting and ending with a letter or digit";

/// A failure of the Kubernetes side: the kubeconfig, an API call, the run, its Secret or pod, or
/// the port-forward.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KubeError {
    /// A run id that is not a label value and the suffix of a Service name.
    #[error("run id {run_id:?}: {RUN_ID_RULE}")]
    BadRunId {
        /// The run id.
        run_id: String,
    },
    /// The namespace variable ([`super::NAMESPACE_ENV`]) is not set.
    #[error(
        "{} is not set: it names the namespace of the kube setup to reach, as that setup's connection settings give it",
        super::NAMESPACE_ENV
    )]
    NoNamespaceEnv,
    /// A kubeconfig file could not be read.
    #[error("reading kubeconfig {}", path.display())]
    ReadKubeconfig {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: KubeCause<kube::config::KubeconfigError>,
    },
    /// The kubeconfig gives no usable configuration (no such context, no cluster, no current
    /// context).
    #[error("kubeconfig {kubeconfig}{}", context.as_ref().map(|c| format!(", context {c:?}")).unwrap_or_default())]
    Kubeconfig {
        /// The file, or where it was looked for.
        kubeconfig: String,
        /// The context asked for (`None`: the current one).
        context: Option<String>,
        /// Why.
        #[source]
        source: KubeCause<kube::config::KubeconfigError>,
    },
    /// No client could be made from the configuration.
    #[error("creating a Kubernetes client from {kubeconfig}")]
    Client {
        /// The file, or where it was looked for.
        kubeconfig: String,
        /// Why.
        #[source]
        source: KubeCause<kube::Error>,
    },
    /// The API server refused a call (403): the account lacks the right that `need` takes. The
    /// message names the verbs, the resource, where, and the Role that grants them.
    #[error(
        "{doing}: not allowed to {}: {}; the API server said: {said}",
        rbac::call(*need, namespace.as_deref()),
        rbac::granted_by(&need.rights()[0], namespace.as_deref())
    )]
    Forbidden {
        /// What was being done.
        doing: String,
        /// The kind of call.
        need: Need,
        /// The namespace it went to (`None`: cluster-wide, or across all namespaces).
        namespace: Option<String>,
        /// What the API server said.
        said: String,
    },
    /// Another failed API call.
    #[error("{doing} ({})", rbac::call(*need, namespace.as_deref()))]
    Api {
        /// What was being done.
        doing: String,
        /// The kind of call.
        need: Need,
        /// The namespace it went to (`None`: cluster-wide, or across all namespaces).
        namespace: Option<String>,
        /// The client's error.
        #[source]
        source: KubeCause<kube::Error>,
    },
    /// No run of setup in the namespace.
    #[error(
        "no PostgreSQL made by e2e-setup in namespace {namespace} (no deployment labelled {})",
        managed_selector()
    )]
    NoRun {
        /// The namespace.
        namespace: String,
    },
    /// Several runs in the namespace, and none named.
    #[error(
        "namespace {namespace} holds {} e2e-setup runs ({}): set {RUN_ID_ENV} to the one to use",
        runs.len(),
        runs.join(", ")
    )]
    ManyRuns {
        /// The namespace.
        namespace: String,
        /// The runs, sorted.
        runs: Vec<String>,
    },
    /// The run's credentials Secret does not exist.
    #[error("no secret {secret} in namespace {namespace}: run {run_id} is not set up there")]
    NoSecret {
        /// The namespace.
        namespace: String,
        /// The Secret.
        secret: String,
        /// The run.
        run_id: String,
    },
    /// The credentials Secret lacks a key.
    #[error("secret {secret} has no key {key}")]
    MissingSecretKey {
        /// The Secret.
        secret: String,
        /// The key.
        key: &'static str,
    },
    /// A key of the credentials Secret is not UTF-8.
    #[error("secret {secret}: key {key} is not UTF-8")]
    SecretKeyNotUtf8 {
        /// The Secret.
        secret: String,
        /// The key.
        key: &'static str,
    },
    /// No PostgreSQL pod of the run is ready.
    #[error("no ready PostgreSQL pod ({}) in namespace {namespace}", pod_selector(run_id))]
    NoReadyPod {
        /// The namespace.
        namespace: String,
        /// The run.
        run_id: String,
    },
    /// The port-forward gave no stream for the port.
    #[error("port-forward to pod {pod}: no stream for port {port}")]
    NoStream {
        /// The pod.
        pod: String,
        /// The port.
        port: u16,
    },
    /// The local listener of a port-forward could not be opened.
    #[error("listening on 127.0.0.1:{port} for the port-forward")]
    Listen {
        /// The port asked for (0: a free one).
        port: u16,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// An error of the Kubernetes client as the last cause in a chain: kube-rs's messages already
/// say their own causes, so the chain ends here and each is said once. The error itself is
/// [`KubeCause::error`].
pub struct KubeCause<E>(pub(crate) E);

impl<E> KubeCause<E> {
    /// The client's error.
    pub fn error(&self) -> &E {
        &self.0
    }
}

impl<E: std::fmt::Debug> std::fmt::Debug for KubeCause<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.0, f)
    }
}

impl<E: std::fmt::Display> std::fmt::Display for KubeCause<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

impl<E: std::error::Error> std::error::Error for KubeCause<E> {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::report;

    #[test]
    fn a_kubeconfig_error_says_its_cause_once() {
        let source = kube::config::Kubeconfig::read_from("/nonexistent/kubeconfig").unwrap_err();
        let e = KubeError::ReadKubeconfig { path: "/nonexistent/kubeconfig".into(), source: KubeCause(source) };
        let text = report(&e);
        assert!(text.starts_with("reading kubeconfig /nonexistent/kubeconfig: "), "{text}");
        assert_eq!(text.matches("No such file or directory").count(), 1, "{text}");
    }

    #[test]
    fn the_run_errors_name_the_namespace_and_what_to_set() {
        let many = KubeError::ManyRuns { namespace: "ns".into(), runs: vec!["a".into(), "b".into()] };
        assert_eq!(many.to_string(), "namespace ns holds 2 e2e-setup runs (a, b): set E2E_RUN_ID to the one to use");
        let pod = KubeError::NoReadyPod { namespace: "ns".into(), run_id: "ab".into() };
        assert_eq!(
            pod.to_string(),
            "no ready PostgreSQL pod (app.kubernetes.io/name=postgres,app.kubernetes.io/managed-by=e2e-migrations,\
             e2e-migrations/run-id=ab) in namespace ns"
        );
        let ctx = KubeError::Kubeconfig {
            kubeconfig: "/k".into(),
            context: Some("lab".into()),
            source: KubeCause(kube::config::KubeconfigError::CurrentContextNotSet),
        };
        assert_eq!(report(&ctx), "kubeconfig /k, context \"lab\": failed to determine current context");
    }
}
