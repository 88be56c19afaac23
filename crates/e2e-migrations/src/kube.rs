//! PostgreSQL in a Kubernetes namespace, reached through a port-forward over the API server.
//!
//! `cargo xtask e2e-setup --backend kind|kube` deploys PostgreSQL into a namespace (its own, or
//! one made for it); this module is how a service test crate reaches it afterwards, with no
//! kubectl and no host port:
//!
//! ```no_run
//! # async fn demo() -> e2e_migrations::Result<()> {
//! use e2e_migrations::kube::Server;
//! use e2e_migrations::{Options, Project};
//! // KUBECONFIG, E2E_NAMESPACE and E2E_RUN_ID as the setup's connection settings give them
//! let server = Server::from_env()?;
//! let sets = ["audit".to_string()];
//! let report = server.migrate_and_roll(&Project::load_default()?, &sets, &Options::default()).await?;
//! let (client, _forward) = server.connect().await?;
//! # let _ = (report, client); Ok(()) }
//! ```
//!
//! The one call for the simplest case (the current context, the namespace's only run) is
//! [`apply_sets`].
//!
//! Each setup is one *run* (an id such as `3f9a1c2b`): its objects are named after it
//! ([`instance_name`], [`secret_name`]) and carry its labels ([`RUN_ID_LABEL`],
//! [`CREATED_AT_LABEL`]), so that runs side by side in one namespace never share an object. The
//! password comes from the run's Secret; the migrations run through the same engine as every
//! other backend ([`crate::apply::migrate_and_roll`]). A refused API call names the verb, the resource
//! and the Role that grants it ([`rbac`]); every failure is a [`KubeError`] that carries what it
//! is about.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::Utc;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::ListParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, ResourceExt};
use tokio::task::JoinHandle;

use crate::apply::ApplyReport;
use crate::error::{Error, Result};
use crate::{Options, Project};

mod error;
pub mod rbac;

pub use error::{KubeCause, KubeError, RUN_ID_RULE};

/// The label that marks what setup made (namespace, objects); setup refuses to adopt anything
/// without it, and teardown deletes nothing without it.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";

/// The value of [`MANAGED_BY_LABEL`] on what setup made.
pub const MANAGED_BY: &str = "e2e-migrations";

/// The label that selects the PostgreSQL pods.
pub const APP_LABEL: &str = "app.kubernetes.io/name";

/// The value of [`APP_LABEL`] on the PostgreSQL pods, and the prefix of the objects' names.
pub const APP_NAME: &str = "postgres";

/// The label naming one setup's objects together ([`instance_name`]).
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";

/// The label carrying the run id: which setup made the object. Teardown and the stale cleanup
/// act on one run's objects at a time, selected by it.
pub const RUN_ID_LABEL: &str = "e2e-migrations/run-id";

/// The label carrying when the run's first setup happened ([`label_time`], UTC).
pub const CREATED_AT_LABEL: &str = "e2e-migrations/created-at";

/// The label carrying when a setup of the run last applied the objects ([`label_time`], UTC):
/// a warm setup renews it, so a run that is still in use does not look stale.
pub const RENEWED_AT_LABEL: &str = "e2e-migrations/renewed-at";

/// The annotation saying who ran setup (a CI job's URL, else the user), for people.
pub const CREATED_BY_ANNOTATION: &str = "e2e-migrations/created-by";

/// Environment variable naming the run (as the setup's connection settings give it).
pub const RUN_ID_ENV: &str = "E2E_RUN_ID";

/// Secret key: the database user.
pub const USER_KEY: &str = "POSTGRES_USER";

/// Secret key: the generated password.
pub const PASSWORD_KEY: &str = "POSTGRES_PASSWORD";

/// Secret key: the database name.
pub const DATABASE_KEY: &str = "POSTGRES_DB";

/// The name of a run's Deployment and Service (and the [`INSTANCE_LABEL`] value):
/// `postgres-<run id>`, so that runs side by side in one namespace never share an object.
pub fn instance_name(run_id: &str) -> String {
    format!("{APP_NAME}-{run_id}")
}

/// The name of a run's credentials Secret (keys [`USER_KEY`], [`PASSWORD_KEY`], [`DATABASE_KEY`]).
pub fn secret_name(run_id: &str) -> String {
    format!("{APP_NAME}-{run_id}-credentials")
}

/// Checks a run id (pure): 1-32 lower-case letters, digits and `-`, starting and ending with a
/// letter or digit, so that it is a label value and `postgres-<run id>` a Service name.
pub fn check_run_id(run_id: &str) -> Result<(), KubeError> {
    let ok = !run_id.is_empty()
        && run_id.len() <= 32
        && run_id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !run_id.starts_with('-')
        && !run_id.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(KubeError::BadRunId { run_id: run_id.to_string() })
    }
}

/// A time as the [`CREATED_AT_LABEL`] and [`RENEWED_AT_LABEL`] hold it: `20240615T120000Z`
/// (label values cannot hold `:`) (pure).
pub fn label_time(t: chrono::DateTime<Utc>) -> String {
    t.format("%Y%m%dT%H%M%SZ").to_string()
}

/// Reads a [`label_time`] back (pure); `None` when it is not one.
pub fn parse_label_time(s: &str) -> Option<chrono::DateTime<Utc>> {
    chrono::NaiveDateTime::parse_from_str(s, "%Y%m%dT%H%M%SZ").ok().map(|t| t.and_utc())
}

/// The port PostgreSQL listens on inside the pod.
pub const POSTGRES_PORT: u16 = 5432;

/// Environment variable naming the namespace (as the setup's connection settings give it).
pub const NAMESPACE_ENV: &str = "E2E_NAMESPACE";

/// Environment variable naming the kubeconfig context (optional; default: the current context).
pub const CONTEXT_ENV: &str = "E2E_KUBE_CONTEXT";

/// The credentials in the Secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user.
    pub user: String,
    /// The password.
    pub password: String,
    /// The database.
    pub database: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"***")
            .field("database", &self.database)
            .finish()
    }
}

/// Reads the credentials out of a Secret's data (pure).
pub fn credentials_from_secret(secret: &Secret) -> Result<Credentials, KubeError> {
    let name = || secret.metadata.name.clone().unwrap_or_else(|| "(unnamed)".to_string());
    let get = |key: &'static str| -> Result<String, KubeError> {
        let data = secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .ok_or_else(|| KubeError::MissingSecretKey { secret: name(), key })?;
        String::from_utf8(data.0.clone()).map_err(|_| KubeError::SecretKeyNotUtf8 { secret: name(), key })
    };
    Ok(Credentials { user: get(USER_KEY)?, password: get(PASSWORD_KEY)?, database: get(DATABASE_KEY)? })
}

/// The label selector for everything setup made in a namespace, of every run.
pub fn managed_selector() -> String {
    format!("{MANAGED_BY_LABEL}={MANAGED_BY}")
}

/// The label selector for one run's objects.
pub fn run_selector(run_id: &str) -> String {
    format!("{MANAGED_BY_LABEL}={MANAGED_BY},{RUN_ID_LABEL}={run_id}")
}

/// The label selector for one run's PostgreSQL pods.
pub fn pod_selector(run_id: &str) -> String {
    format!("{APP_LABEL}={APP_NAME},{MANAGED_BY_LABEL}={MANAGED_BY},{RUN_ID_LABEL}={run_id}")
}

/// Whether the pod is running, not being deleted, and has condition `Ready=True` (pure; a pod in
/// a cluster without pod networking has no IP, so the IP is not looked at).
pub fn pod_is_ready(pod: &Pod) -> bool {
    if pod.metadata.deletion_timestamp.is_some() {
        return false;
    }
    let Some(status) = &pod.status else {
        return false;
    };
    status.phase.as_deref() == Some("Running")
        && status.conditions.iter().flatten().any(|c| c.type_ == "Ready" && c.status == "True")
}

/// The newest ready pod's name among `pods` (pure).
pub fn pick_ready_pod(pods: &[Pod]) -> Option<String> {
    pods.iter()
        .filter(|p| pod_is_ready(p))
        .max_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0))
        .and_then(|p| p.metadata.name.clone())
}

/// The run in a namespace when none is named (pure over the run ids of its PostgreSQL
/// Deployments): the only one, else an error that lists them.
pub fn pick_run(namespace: &str, runs: &[String]) -> Result<String, KubeError> {
    let mut runs = runs.to_vec();
    runs.sort();
    runs.dedup();
    match runs.len() {
        1 => Ok(runs.remove(0)),
        0 => Err(KubeError::NoRun { namespace: namespace.to_string() }),
        _ => Err(KubeError::ManyRuns { namespace: namespace.to_string(), runs }),
    }
}

/// A PostgreSQL server that a kube setup made, and where it is: a kubeconfig file, a context in
/// it, the namespace, and the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// The kubeconfig file (`None`: `$KUBECONFIG`, else `~/.kube/config`).
    pub kubeconfig: Option<PathBuf>,
    /// The context (`None`: the kubeconfig's current context).
    pub context: Option<String>,
    /// The namespace setup deployed into.
    pub namespace: String,
    /// The run whose PostgreSQL to use (`None`: the only run in the namespace).
    pub run_id: Option<String>,
}

/// A running port-forward. It lives as long as the connection over it (dropping this handle
/// does not stop it); keep it to stop the forward early ([`Forward::abort`]).
#[derive(Debug)]
pub struct Forward {
    task: JoinHandle<()>,
    /// The pod the connection goes to.
    pub pod: String,
}

impl Forward {
    /// Stops the forward (the connection over it fails afterwards).
    pub fn abort(&self) {
        self.task.abort();
    }
}

impl Server {
    /// From the environment: `KUBECONFIG` (one file), `E2E_NAMESPACE` (required),
    /// `E2E_KUBE_CONTEXT` and `E2E_RUN_ID` (optional), as the setup's connection settings
    /// (`cargo xtask e2e-setup --print-env`, `connection.env`) give them.
    pub fn from_env() -> Result<Server> {
        let namespace = std::env::var(NAMESPACE_ENV).map_err(|_| KubeError::NoNamespaceEnv)?;
        let kubeconfig = std::env::var_os("KUBECONFIG").filter(|k| !k.is_empty()).map(PathBuf::from);
        let context = std::env::var(CONTEXT_ENV).ok().filter(|c| !c.is_empty());
        let run_id = std::env::var(RUN_ID_ENV).ok().filter(|r| !r.is_empty());
        if let Some(r) = &run_id {
            check_run_id(r).map_err(|_| Error::InvalidEnv {
                var: RUN_ID_ENV,
                value: r.clone(),
                expected: RUN_ID_RULE,
            })?;
        }
        Ok(Server { kubeconfig, context, namespace, run_id })
    }

    /// A Kubernetes client for this server's kubeconfig and context.
    pub async fn client(&self) -> Result<Client, KubeError> {
        client(self.kubeconfig.as_deref(), self.context.as_deref()).await
    }

    /// The run: the one named, else the only one in the namespace.
    pub async fn run(&self, client: &Client) -> Result<String, KubeError> {
        if let Some(r) = &self.run_id {
            return Ok(r.clone());
        }
        let ns = &self.namespace;
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
        let selector = format!("{},{APP_LABEL}={APP_NAME}", managed_selector());
        let list = deployments
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| rbac::explain(e, rbac::Need::ListDeployments, Some(ns), "finding the e2e-setup run"))?;
        let runs: Vec<String> = list.items.iter().filter_map(|d| d.labels().get(RUN_ID_LABEL).cloned()).collect();
        pick_run(ns, &runs)
    }

    /// Reads the credentials from the Secret setup made for `run_id`.
    pub async fn credentials(&self, client: &Client, run_id: &str) -> Result<Credentials, KubeError> {
        let ns = &self.namespace;
        let name = secret_name(run_id);
        let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
        let secret = match secrets.get(&name).await {
            Ok(s) => s,
            Err(e) if rbac::is_not_found(&e) => {
                return Err(KubeError::NoSecret { namespace: ns.clone(), secret: name, run_id: run_id.to_string() })
            }
            Err(e) => {
                return Err(rbac::explain(e, rbac::Need::GetSecrets, Some(ns), &format!("reading secret {name}")))
            }
        };
        credentials_from_secret(&secret)
    }

    /// The name of a ready PostgreSQL pod of `run_id`.
    pub async fn ready_pod(&self, client: &Client, run_id: &str) -> Result<String, KubeError> {
        let ns = &self.namespace;
        let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
        let list = pods
            .list(&ListParams::default().labels(&pod_selector(run_id)))
            .await
            .map_err(|e| rbac::explain(e, rbac::Need::ListPods, Some(ns), "finding the PostgreSQL pod"))?;
        pick_ready_pod(&list.items)
            .ok_or_else(|| KubeError::NoReadyPod { namespace: ns.clone(), run_id: run_id.to_string() })
    }

    /// Connects to the PostgreSQL through a port-forward to a ready pod.
    pub async fn connect(&self) -> Result<(tokio_postgres::Client, Forward)> {
        let client = self.client().await?;
        let run = self.run(&client).await?;
        let creds = self.credentials(&client, &run).await?;
        let pod = self.ready_pod(&client, &run).await?;
        connect_forwarded(&client, &self.namespace, &pod, &creds, crate::db::connect_timeout()?).await
    }

    /// Applies `sets` (empty means `all`) of `project` and rolls their partitions, through the
    /// port-forward: [`crate::apply::migrate_and_roll`] on this server.
    pub async fn migrate_and_roll(&self, project: &Project, sets: &[String], opts: &Options) -> Result<ApplyReport> {
        project.select(sets)?; // validate before touching the cluster
        let (mut client, forward) = self.connect().await?;
        let report = crate::apply::migrate_and_roll(&mut client, project, sets, opts, Utc::now()).await;
        drop(client);
        forward.abort();
        report
    }
}

/// Applies `sets` (empty means `all`) of the project's migrations (or `$E2E_MIGRATIONS_DIR`) to
/// the PostgreSQL in `namespace` of the cluster in `kubeconfig` (current context; the
/// namespace's only run) and rolls their partitions, through a port-forward, with the default
/// options: the original design's one call for service test crates. [`Server`] does the same
/// with a context, a run, a project and options of the caller's.
pub async fn apply_sets(kubeconfig: &Path, namespace: &str, sets: &[String]) -> Result<ApplyReport> {
    let server = Server {
        kubeconfig: Some(kubeconfig.to_path_buf()),
        context: None,
        namespace: namespace.to_string(),
        run_id: None,
    };
    server.migrate_and_roll(&Project::load_default()?, sets, &Options::default()).await
}

/// A client from `kubeconfig` (else `$KUBECONFIG`, else `~/.kube/config`) and `context` (else
/// the current one).
pub async fn client(kubeconfig: Option<&Path>, context: Option<&str>) -> Result<Client, KubeError> {
    let options = KubeConfigOptions { context: context.map(str::to_string), ..KubeConfigOptions::default() };
    let where_ =
        kubeconfig.map(|p| p.display().to_string()).unwrap_or_else(|| "$KUBECONFIG or ~/.kube/config".to_string());
    let config = match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .map_err(|e| KubeError::ReadKubeconfig { path: path.to_path_buf(), source: KubeCause(e) })?;
            kube::Config::from_custom_kubeconfig(kc, &options).await
        }
        None => kube::Config::from_kubeconfig(&options).await,
    }
    .map_err(|e| KubeError::Kubeconfig {
        kubeconfig: where_.clone(),
        context: context.map(str::to_string),
        source: KubeCause(e),
    })?;
    Client::try_from(config).map_err(|e| KubeError::Client { kubeconfig: where_, source: KubeCause(e) })
}

/// Opens a port-forward to `pod`'s PostgreSQL port and connects tokio-postgres over it.
///
/// The startup through the forward (protocol, authentication) must finish within `timeout`.
pub async fn connect_forwarded(
    client: &Client,
    namespace: &str,
    pod: &str,
    creds: &Credentials,
    timeout: Duration,
) -> Result<(tokio_postgres::Client, Forward)> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let mut forwarder = pods.portforward(pod, &[POSTGRES_PORT]).await.map_err(|e| {
        rbac::explain(e, rbac::Need::PortForward, Some(namespace), &format!("port-forward to pod {pod}"))
    })?;
    let stream = forwarder
        .take_stream(POSTGRES_PORT)
        .ok_or_else(|| KubeError::NoStream { pod: pod.to_string(), port: POSTGRES_PORT })?;
    if let Some(err) = forwarder.take_error(POSTGRES_PORT) {
        let pod = pod.to_string();
        tokio::spawn(async move {
            if let Some(e) = err.await {
                tracing::warn!("port-forward to pod {pod}: {e}");
            }
        });
    }
    let ended = pod.to_string();
    let task = tokio::spawn(async move {
        if let Err(e) = forwarder.join().await {
            tracing::debug!("port-forward to pod {ended} ended: {e}");
        }
    });
    let forward = Forward { task, pod: pod.to_string() };
    let mut config = tokio_postgres::Config::new();
    config
        .user(&creds.user)
        .password(&creds.password)
        .dbname(&creds.database)
        .application_name(crate::db::APPLICATION_NAME)
        .connect_timeout(timeout);
    let connecting = config.connect_raw(stream, tokio_postgres::NoTls);
    let (pg, connection) = match tokio::time::timeout(timeout, connecting).await {
        Ok(Ok(c)) => c,
        Ok(Err(source)) => {
            forward.abort();
            return Err(Error::Db {
                context: format!("connecting through the port-forward to pod {pod} in namespace {namespace}"),
                source: source.into(),
            });
        }
        Err(_) => {
            forward.abort();
            return Err(Error::NoAnswer {
                context: format!("connecting through the port-forward to pod {pod} in namespace {namespace}"),
                timeout,
            });
        }
    };
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("forwarded connection closed: {e}");
        }
    });
    Ok((pg, forward))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    use k8s_openapi::ByteString;

    fn pod(name: &str, phase: &str, ready: bool, created_s: i64) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                creation_timestamp: Some(Time(k8s_openapi::jiff::Timestamp::from_second(created_s).unwrap())),
                ..ObjectMeta::default()
            },
            status: Some(PodStatus {
                phase: Some(phase.to_string()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".to_string(),
                    status: if ready { "True" } else { "False" }.to_string(),
                    ..PodCondition::default()
                }]),
                ..PodStatus::default()
            }),
            ..Pod::default()
        }
    }

    #[test]
    fn picks_the_newest_ready_pod_and_ignores_the_ip() {
        let pods =
            [pod("old", "Running", true, 10), pod("new", "Running", true, 20), pod("newest", "Running", false, 30)];
        assert_eq!(pick_ready_pod(&pods).as_deref(), Some("new"));
        assert_eq!(pick_ready_pod(&[pod("p", "Pending", true, 1)]), None);
        let mut leaving = pod("leaving", "Running", true, 1);
        leaving.metadata.deletion_timestamp = leaving.metadata.creation_timestamp.clone();
        assert_eq!(pick_ready_pod(&[leaving]), None);
    }

    #[test]
    fn credentials_come_from_the_secret_and_never_print_the_password() {
        let mut secret = Secret::default();
        let data = [(USER_KEY, "e2e"), (PASSWORD_KEY, "s3cret"), (DATABASE_KEY, "e2e")];
        secret.data = Some(data.iter().map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec()))).collect());
        let creds = credentials_from_secret(&secret).unwrap();
        assert_eq!(creds.password, "s3cret");
        assert_eq!(format!("{creds:?}"), r#"Credentials { user: "e2e", password: "***", database: "e2e" }"#);
        secret.data.as_mut().unwrap().remove(PASSWORD_KEY);
        assert!(credentials_from_secret(&secret).unwrap_err().to_string().contains("no key POSTGRES_PASSWORD"));
    }

    #[test]
    fn runs_name_their_objects_and_select_only_their_own_pods() {
        assert_eq!(instance_name("3f9a1c2b"), "postgres-3f9a1c2b");
        assert_eq!(secret_name("3f9a1c2b"), "postgres-3f9a1c2b-credentials");
        assert_eq!(
            pod_selector("3f9a1c2b"),
            "app.kubernetes.io/name=postgres,app.kubernetes.io/managed-by=e2e-migrations,e2e-migrations/run-id=3f9a1c2b"
        );
        assert_eq!(run_selector("ab"), "app.kubernetes.io/managed-by=e2e-migrations,e2e-migrations/run-id=ab");
    }

    #[test]
    fn run_ids_must_be_label_values_and_service_name_suffixes() {
        for ok in ["3f9a1c2b", "gh-1234-1", "a"] {
            assert!(check_run_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", "A1", "a_b", "a.b", &"x".repeat(33)] {
            let e = check_run_id(bad).unwrap_err().to_string();
            assert!(e.starts_with(&format!("run id {bad:?}")), "{e}");
        }
    }

    #[test]
    fn label_times_round_trip_and_refuse_other_text() {
        let t = chrono::DateTime::parse_from_rfc3339("2024-06-15T12:34:56Z").unwrap().with_timezone(&Utc);
        assert_eq!(label_time(t), "20240615T123456Z");
        assert_eq!(parse_label_time("20240615T123456Z"), Some(t));
        assert_eq!(parse_label_time("2024-06-15T12:34:56Z"), None);
        assert_eq!(parse_label_time(""), None);
    }

    #[test]
    fn the_run_is_the_only_one_or_must_be_named() {
        assert_eq!(pick_run("ns", &["a".into(), "a".into()]).unwrap(), "a");
        let none = pick_run("ns", &[]).unwrap_err().to_string();
        assert!(none.starts_with("no PostgreSQL made by e2e-setup in namespace ns"), "{none}");
        let many = pick_run("ns", &["b".into(), "a".into()]).unwrap_err().to_string();
        assert!(many.starts_with("namespace ns holds 2 e2e-setup runs (a, b): set E2E_RUN_ID"), "{many}");
    }
}

/// A listener on 127.0.0.1 that forwards every connection to the PostgreSQL pod over the
/// Kubernetes API (one port-forward per connection, as `kubectl port-forward` does), so that code
/// that speaks URLs (test databases, `migrate`, `psql`) reaches a server that has no host port.
#[derive(Debug)]
pub struct LocalForward {
    /// A URL of the setup's database through the listener (password included).
    pub url: String,
    /// The listener's address.
    pub addr: std::net::SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for LocalForward {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Percent-encodes a URL user-info part (everything but RFC 3986's unreserved characters).
pub fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Server {
    /// Starts a [`LocalForward`] to a ready pod on a free port of 127.0.0.1 (the listener lives
    /// on the current runtime until the value is dropped).
    pub async fn local_forward(&self) -> Result<LocalForward, KubeError> {
        self.local_forward_on(0).await
    }

    /// As [`Server::local_forward`], on `port` of 127.0.0.1 (0: a free one).
    pub async fn local_forward_on(&self, port: u16) -> Result<LocalForward, KubeError> {
        let client = self.client().await?;
        let run = self.run(&client).await?;
        let creds = self.credentials(&client, &run).await?;
        let pod = self.ready_pod(&client, &run).await?;
        let listener = tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, port))
            .await
            .map_err(|source| KubeError::Listen { port, source })?;
        let addr = listener.local_addr().map_err(|source| KubeError::Listen { port, source })?;
        let pods: Api<Pod> = Api::namespaced(client, &self.namespace);
        // one forward now, so that a missing right is an error here rather than a connection
        // that the listener resets later
        let probe = pods.portforward(&pod, &[POSTGRES_PORT]).await.map_err(|e| {
            rbac::explain(e, rbac::Need::PortForward, Some(&self.namespace), &format!("port-forward to pod {pod}"))
        })?;
        probe.abort();
        let task = tokio::spawn(async move {
            loop {
                let (mut tcp, _) = match listener.accept().await {
                    Ok(conn) => conn,
                    Err(e) => {
                        tracing::warn!("port-forward listener: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let (pods, pod) = (pods.clone(), pod.clone());
                tokio::spawn(async move {
                    let mut forwarder = match pods.portforward(&pod, &[POSTGRES_PORT]).await {
                        Ok(f) => f,
                        Err(e) => return tracing::warn!("port-forward to pod {pod}: {e}"),
                    };
                    if let Some(mut stream) = forwarder.take_stream(POSTGRES_PORT) {
                        let _ = tokio::io::copy_bidirectional(&mut tcp, &mut stream).await;
                    }
                    drop(tcp);
                    let _ = forwarder.join().await;
                });
            }
        });
        let url = format!(
            "postgres://{}:{}@127.0.0.1:{}/{}",
            percent_encode(&creds.user),
            percent_encode(&creds.password),
            addr.port(),
            percent_encode(&creds.database)
        );
        Ok(LocalForward { url, addr, task })
    }
}

#[cfg(test)]
mod forward_tests {
    use super::*;

    #[test]
    fn user_info_is_percent_encoded() {
        assert_eq!(percent_encode("a b@c:d/é"), "a%20b%40c%3Ad%2F%C3%A9");
        assert_eq!(percent_encode("9f_A-z.~"), "9f_A-z.~");
        let url = format!("postgres://u:{}@127.0.0.1:5/db", percent_encode("p@ss:w/rd"));
        let c: tokio_postgres::Config = url.parse().unwrap();
        assert_eq!(c.get_password(), Some(&b"p@ss:w/rd"[..]));
    }
}
