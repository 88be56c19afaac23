//! PostgreSQL in a Kubernetes namespace, reached through a port-forward over the API server.
//!
//! `cargo xtask e2e-setup --backend kind|kube` deploys PostgreSQL into a namespace it owns; this
//! module is how a service test crate reaches it afterwards, with no kubectl and no host port:
//!
//! ```no_run
//! # async fn demo() -> e2e_migrations::Result<()> {
//! use e2e_migrations::kube::Target;
//! // KUBECONFIG and E2E_NAMESPACE as `cargo xtask e2e-setup --print-env` prints them
//! let target = Target::from_env()?;
//! let report = target.apply_sets(&["audit".to_string()]).await?;
//! let (client, _forward) = target.connect().await?;
//! # let _ = (report, client); Ok(()) }
//! ```
//!
//! The password comes from the Secret that setup made ([`SECRET_NAME`]); the migrations run
//! through the same engine as every other backend ([`crate::apply::apply_sets`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::Utc;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::ListParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use tokio::task::JoinHandle;

use crate::apply::ApplyReport;
use crate::error::{Error, Result};
use crate::{Options, Project};

/// The label that marks what setup made (namespace, objects); setup refuses to adopt anything
/// without it, and teardown deletes nothing without it.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";

/// The value of [`MANAGED_BY_LABEL`] on what setup made.
pub const MANAGED_BY: &str = "e2e-migrations";

/// The label that selects the PostgreSQL pods.
pub const APP_LABEL: &str = "app.kubernetes.io/name";

/// The value of [`APP_LABEL`] on the PostgreSQL pods (also the Deployment's and Service's name).
pub const APP_NAME: &str = "postgres";

/// The Secret holding the credentials (keys [`USER_KEY`], [`PASSWORD_KEY`], [`DATABASE_KEY`]).
pub const SECRET_NAME: &str = "postgres-credentials";

/// Secret key: the database user.
pub const USER_KEY: &str = "POSTGRES_USER";

/// Secret key: the generated password.
pub const PASSWORD_KEY: &str = "POSTGRES_PASSWORD";

/// Secret key: the database name.
pub const DATABASE_KEY: &str = "POSTGRES_DB";

/// The port PostgreSQL listens on inside the pod.
pub const POSTGRES_PORT: u16 = 5432;

/// Environment variable naming the namespace (as `connection.env` and `--print-env` write it).
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
pub fn credentials_from_secret(secret: &Secret) -> Result<Credentials> {
    let get = |key: &str| -> Result<String> {
        let data = secret.data.as_ref().and_then(|d| d.get(key)).ok_or_else(|| {
            Error::Other(format!("secret {SECRET_NAME} has no key {key}; rerun `cargo xtask e2e-setup` to recreate it"))
        })?;
        String::from_utf8(data.0.clone())
            .map_err(|_| Error::Other(format!("secret {SECRET_NAME}: key {key} is not UTF-8")))
    };
    Ok(Credentials { user: get(USER_KEY)?, password: get(PASSWORD_KEY)?, database: get(DATABASE_KEY)? })
}

/// The label selector for the PostgreSQL pods.
pub fn pod_selector() -> String {
    format!("{APP_LABEL}={APP_NAME},{MANAGED_BY_LABEL}={MANAGED_BY}")
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

/// Where the PostgreSQL is: a kubeconfig file, a context in it, and the namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The kubeconfig file (`None`: `$KUBECONFIG`, else `~/.kube/config`).
    pub kubeconfig: Option<PathBuf>,
    /// The context (`None`: the kubeconfig's current context).
    pub context: Option<String>,
    /// The namespace setup deployed into.
    pub namespace: String,
}

/// A running port-forward. It lives as long as the connection over it (dropping this handle
/// does not stop it); keep it to stop the forward early ([`Forward::abort`]) or to learn why it
/// ended ([`Forward::join`]).
#[derive(Debug)]
pub struct Forward {
    task: JoinHandle<std::result::Result<(), String>>,
    /// The pod the connection goes to.
    pub pod: String,
}

impl Forward {
    /// Stops the forward (the connection over it fails afterwards).
    pub fn abort(&self) {
        self.task.abort();
    }

    /// Waits until the forward ends (when the connection closes).
    pub async fn join(self) -> Result<()> {
        match self.task.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Error::Other(format!("port-forward to pod {}: {e}", self.pod))),
            Err(e) if e.is_cancelled() => Ok(()),
            Err(e) => Err(Error::Other(format!("port-forward to pod {}: {e}", self.pod))),
        }
    }
}

impl Target {
    /// A target in `namespace` with the default kubeconfig and context.
    pub fn new(namespace: impl Into<String>) -> Target {
        Target { kubeconfig: None, context: None, namespace: namespace.into() }
    }

    /// From the environment: `KUBECONFIG` (one file), `E2E_NAMESPACE` (required), and
    /// `E2E_KUBE_CONTEXT` (optional), as `cargo xtask e2e-setup --print-env` prints them.
    pub fn from_env() -> Result<Target> {
        let namespace = std::env::var(NAMESPACE_ENV).map_err(|_| {
            Error::Other(format!(
                "{NAMESPACE_ENV} is not set; run `eval \"$(cargo xtask e2e-setup --backend kube --context C --namespace N --print-env)\"` first"
            ))
        })?;
        let kubeconfig = std::env::var_os("KUBECONFIG").filter(|k| !k.is_empty()).map(PathBuf::from);
        let context = std::env::var(CONTEXT_ENV).ok().filter(|c| !c.is_empty());
        Ok(Target { kubeconfig, context, namespace })
    }

    /// A Kubernetes client for this target's kubeconfig and context.
    pub async fn client(&self) -> Result<Client> {
        client(self.kubeconfig.as_deref(), self.context.as_deref()).await
    }

    /// Reads the credentials from the Secret setup made.
    pub async fn credentials(&self, client: &Client) -> Result<Credentials> {
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &self.namespace);
        let secret = secrets.get(SECRET_NAME).await.map_err(|e| {
            Error::Other(format!(
                "reading secret {SECRET_NAME} in namespace {}: {e}; run `cargo xtask e2e-setup --backend kube --namespace {}` first",
                self.namespace, self.namespace
            ))
        })?;
        credentials_from_secret(&secret)
    }

    /// The name of a ready PostgreSQL pod.
    pub async fn ready_pod(&self, client: &Client) -> Result<String> {
        let pods: Api<Pod> = Api::namespaced(client.clone(), &self.namespace);
        let list = pods
            .list(&ListParams::default().labels(&pod_selector()))
            .await
            .map_err(|e| Error::Other(format!("listing pods in namespace {}: {e}", self.namespace)))?;
        pick_ready_pod(&list.items).ok_or_else(|| {
            Error::Other(format!(
                "no ready PostgreSQL pod ({}) in namespace {}; run `cargo xtask e2e-setup --backend kube --namespace {}` first",
                pod_selector(),
                self.namespace,
                self.namespace
            ))
        })
    }

    /// Connects to the PostgreSQL through a port-forward to a ready pod.
    pub async fn connect(&self) -> Result<(tokio_postgres::Client, Forward)> {
        let client = self.client().await?;
        let creds = self.credentials(&client).await?;
        let pod = self.ready_pod(&client).await?;
        connect_forwarded(&client, &self.namespace, &pod, &creds, crate::db::connect_timeout()?).await
    }

    /// Applies `sets` (empty means `all`) of the project's migrations (or `$E2E_MIGRATIONS_DIR`)
    /// and rolls their partitions, through the port-forward, with the default options.
    pub async fn apply_sets(&self, sets: &[String]) -> Result<ApplyReport> {
        let project = Project::load_default()?;
        self.apply_project_sets(&project, sets, &Options::default()).await
    }

    /// As [`Target::apply_sets`], with a given project and options.
    pub async fn apply_project_sets(&self, project: &Project, sets: &[String], opts: &Options) -> Result<ApplyReport> {
        project.select(sets)?; // validate before touching the cluster
        let (mut client, forward) = self.connect().await?;
        let report = crate::apply::apply_sets(&mut client, project, sets, opts, Utc::now()).await;
        drop(client);
        forward.abort();
        report
    }
}

/// Applies `sets` to the PostgreSQL in `namespace` of the cluster in `kubeconfig` (current
/// context), through a port-forward: the original design's one call for service test crates.
pub async fn apply_sets(kubeconfig: &Path, namespace: &str, sets: &[String]) -> Result<ApplyReport> {
    let target = Target { kubeconfig: Some(kubeconfig.to_path_buf()), context: None, namespace: namespace.to_string() };
    target.apply_sets(sets).await
}

/// A client from `kubeconfig` (else `$KUBECONFIG`, else `~/.kube/config`) and `context` (else
/// the current one).
pub async fn client(kubeconfig: Option<&Path>, context: Option<&str>) -> Result<Client> {
    let options = KubeConfigOptions { context: context.map(str::to_string), ..KubeConfigOptions::default() };
    let where_ =
        kubeconfig.map(|p| p.display().to_string()).unwrap_or_else(|| "$KUBECONFIG or ~/.kube/config".to_string());
    let config = match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .map_err(|e| Error::Other(format!("reading kubeconfig {}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(kc, &options).await
        }
        None => kube::Config::from_kubeconfig(&options).await,
    }
    .map_err(|e| match context {
        Some(c) => Error::Other(format!("kubeconfig {where_}, context {c:?} (--context): {e}")),
        None => Error::Other(format!("kubeconfig {where_}: {e}")),
    })?;
    Client::try_from(config).map_err(|e| Error::Other(format!("creating a Kubernetes client from {where_}: {e}")))
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
    let mut forwarder = pods
        .portforward(pod, &[POSTGRES_PORT])
        .await
        .map_err(|e| Error::Other(format!("port-forward to pod {pod} in namespace {namespace}: {e}")))?;
    let stream = forwarder
        .take_stream(POSTGRES_PORT)
        .ok_or_else(|| Error::Other(format!("port-forward to pod {pod}: no stream for port {POSTGRES_PORT}")))?;
    if let Some(err) = forwarder.take_error(POSTGRES_PORT) {
        let pod = pod.to_string();
        tokio::spawn(async move {
            if let Some(e) = err.await {
                tracing::warn!("port-forward to pod {pod}: {e}");
            }
        });
    }
    let task = tokio::spawn(async move { forwarder.join().await.map_err(|e| e.to_string()) });
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
                source,
            });
        }
        Err(_) => {
            forward.abort();
            return Err(Error::Other(format!(
                "connecting through the port-forward to pod {pod} in namespace {namespace}: no PostgreSQL answer \
                 within {} s (raise it with {})",
                timeout.as_secs_f64(),
                crate::db::CONNECT_TIMEOUT_ENV
            )));
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

impl Target {
    /// Starts a [`LocalForward`] to a ready pod (the listener lives on the current runtime until
    /// the value is dropped).
    pub async fn local_forward(&self) -> Result<LocalForward> {
        let client = self.client().await?;
        let creds = self.credentials(&client).await?;
        let pod = self.ready_pod(&client).await?;
        let listener = tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
            .await
            .map_err(|e| Error::Other(format!("listening on 127.0.0.1 for the port-forward: {e}")))?;
        let addr = listener.local_addr().map_err(|e| Error::Other(format!("port-forward listener: {e}")))?;
        let pods: Api<Pod> = Api::namespaced(client, &self.namespace);
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
