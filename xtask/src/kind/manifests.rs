//! The typed Kubernetes objects for PostgreSQL in the cluster (k8s-openapi), rendered for
//! server-side apply and, as YAML, for `--dry-run` and the snapshot tests.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use e2e_migrations::kube::{
    instance_name, label_time, secret_name, APP_LABEL, APP_NAME, CREATED_AT_LABEL, CREATED_BY_ANNOTATION, DATABASE_KEY,
    INSTANCE_LABEL, MANAGED_BY, MANAGED_BY_LABEL, PASSWORD_KEY, POSTGRES_PORT, RENEWED_AT_LABEL, RUN_ID_LABEL,
    USER_KEY,
};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource, ExecAction, Namespace,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, Secret,
    SecretKeySelector, SecurityContext, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::ByteString;

use super::config::PostgresSettings;

/// The pod-template annotation that changes with the password, so a new Secret rolls the pod.
pub(crate) const CREDENTIALS_HASH_ANNOTATION: &str = "e2e-migrations/credentials-hash";

/// Where the data lives in the container (an emptyDir: gone with the pod).
const DATA_DIR: &str = "/var/lib/postgresql/data";

/// The settings that make PostgreSQL fast for throwaway test data (never for real data). Like the
/// local server's, they survive the server being killed (a container restarted in its pod keeps
/// the emptyDir): not `synchronous_commit=off`, which loses the last commits then (see
/// `e2e_migrations::local::server_conf`).
pub(crate) const TEST_SPEED_SETTINGS: &[&str] = &["fsync=off", "full_page_writes=off"];

/// How the host reaches the Service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exposure {
    /// Kind: a fixed NodePort that the node publishes on 127.0.0.1.
    NodePort(u16),
    /// Any other cluster: ClusterIP only (NodePorts are cluster-wide and would clash on a
    /// shared cluster); the host connects through a port-forward.
    ClusterIp,
}

/// Who made the objects and when: the labels and annotation every object of a run carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RunMeta {
    /// The run id (names and [`RUN_ID_LABEL`]).
    pub(crate) run_id: String,
    /// The run's first setup ([`CREATED_AT_LABEL`]).
    pub(crate) created_at: DateTime<Utc>,
    /// This setup ([`RENEWED_AT_LABEL`]).
    pub(crate) renewed_at: DateTime<Utc>,
    /// Who ran it ([`CREATED_BY_ANNOTATION`]).
    pub(crate) created_by: String,
}

/// The objects, in apply order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Manifests {
    /// The namespace, labelled as ours; `None` in a namespace someone else made.
    pub(crate) namespace: Option<Namespace>,
    /// The credentials.
    pub(crate) secret: Secret,
    /// The Service.
    pub(crate) service: Service,
    /// PostgreSQL.
    pub(crate) deployment: Deployment,
}

/// The labels that select a run's PostgreSQL pods (the Deployment's selector, immutable, and
/// the Service's): app, instance, manager.
fn selector_labels(run_id: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
        (APP_LABEL.to_string(), APP_NAME.to_string()),
        (INSTANCE_LABEL.to_string(), instance_name(run_id)),
    ])
}

/// The pod template's labels: the selector's and the run id (no times, so that a warm setup
/// does not roll the pod).
fn pod_labels(run_id: &str) -> BTreeMap<String, String> {
    let mut l = selector_labels(run_id);
    l.insert(RUN_ID_LABEL.to_string(), run_id.to_string());
    l
}

/// The labels on every object of the run: who made it (manager, run) and when.
pub(crate) fn run_labels(run: &RunMeta) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
        (RUN_ID_LABEL.to_string(), run.run_id.clone()),
        (CREATED_AT_LABEL.to_string(), label_time(run.created_at)),
        (RENEWED_AT_LABEL.to_string(), label_time(run.renewed_at)),
    ])
}

fn run_annotations(run: &RunMeta) -> BTreeMap<String, String> {
    BTreeMap::from([(CREATED_BY_ANNOTATION.to_string(), run.created_by.clone())])
}

fn meta(name: &str, namespace: &str, run: &RunMeta) -> ObjectMeta {
    let mut labels = run_labels(run);
    labels.extend(selector_labels(&run.run_id));
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(namespace.to_string()),
        labels: Some(labels),
        annotations: Some(run_annotations(run)),
        ..ObjectMeta::default()
    }
}

fn secret_env(secret: &str, name: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector { name: secret.to_string(), key: key.to_string(), optional: None }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// A short stable hash (FNV-1a 64, hex) of the password, for the pod-template annotation.
pub(crate) fn credentials_hash(password: &str) -> String {
    let h = super::config::fnv1a(password.as_bytes());
    format!("{h:016x}")
}

fn quantities(map: &BTreeMap<String, String>) -> Option<BTreeMap<String, Quantity>> {
    (!map.is_empty()).then(|| map.iter().map(|(k, v)| (k.clone(), Quantity(v.clone()))).collect())
}

fn runtime_default_seccomp() -> Option<SeccompProfile> {
    Some(SeccompProfile { type_: "RuntimeDefault".to_string(), localhost_profile: None })
}

/// The pod's security context: the Pod Security Standard "restricted" (non-root, the
/// RuntimeDefault seccomp profile), with the ids from the settings (none when the platform
/// assigns them) and `fsGroup` so that the data volume is writable by whatever uid runs.
fn pod_security(pg: &PostgresSettings) -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: pg.run_as_user.get(),
        run_as_group: pg.run_as_group.get(),
        fs_group: pg.fs_group.get(),
        seccomp_profile: runtime_default_seccomp(),
        ..PodSecurityContext::default()
    }
}

/// The container's security context: no privilege, no escalation, every capability dropped.
fn container_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities { drop: Some(vec!["ALL".to_string()]), add: None }),
        seccomp_profile: runtime_default_seccomp(),
        ..SecurityContext::default()
    }
}

impl Manifests {
    /// Builds the objects of `run` for `pg` in `namespace` with `password` (pure).
    /// `own_namespace`: setup creates (and teardown deletes) the namespace; else it belongs to
    /// someone else and is not among the objects.
    pub(crate) fn new(
        pg: &PostgresSettings,
        namespace: &str,
        password: &str,
        exposure: Exposure,
        run: &RunMeta,
        own_namespace: bool,
    ) -> Manifests {
        let run_id = run.run_id.as_str();
        let instance = instance_name(run_id);
        let secret_name = secret_name(run_id);
        let namespace_obj = own_namespace.then(|| Namespace {
            metadata: ObjectMeta {
                name: Some(namespace.to_string()),
                labels: Some(run_labels(run)),
                annotations: Some(run_annotations(run)),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        });
        let data = [(USER_KEY, pg.user.as_str()), (PASSWORD_KEY, password), (DATABASE_KEY, pg.database.as_str())];
        let secret = Secret {
            metadata: meta(&secret_name, namespace, run),
            type_: Some("Opaque".to_string()),
            data: Some(data.iter().map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec()))).collect()),
            ..Secret::default()
        };
        let (type_, node_port) = match exposure {
            Exposure::NodePort(p) => ("NodePort", Some(i32::from(p))),
            Exposure::ClusterIp => ("ClusterIP", None),
        };
        let service = Service {
            metadata: meta(&instance, namespace, run),
            spec: Some(ServiceSpec {
                type_: Some(type_.to_string()),
                selector: Some(selector_labels(run_id)),
                ports: Some(vec![ServicePort {
                    name: Some("postgres".to_string()),
                    // the 1.20 API server refuses a server-side apply of a port without it
                    protocol: Some("TCP".to_string()),
                    port: i32::from(POSTGRES_PORT),
                    target_port: Some(IntOrString::Int(i32::from(POSTGRES_PORT))),
                    node_port,
                    ..ServicePort::default()
                }]),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        };
        let mut args = vec!["postgres".to_string()];
        for s in TEST_SPEED_SETTINGS.iter().map(|s| s.to_string()).chain(pg.settings.iter().cloned()) {
            args.push("-c".to_string());
            args.push(s);
        }
        let port = POSTGRES_PORT.to_string();
        let container = Container {
            name: "postgres".to_string(),
            image: Some(pg.image.clone()),
            image_pull_policy: Some(pg.image_pull_policy.clone()),
            args: Some(args),
            env: Some(vec![
                secret_env(&secret_name, "POSTGRES_USER", USER_KEY),
                secret_env(&secret_name, "POSTGRES_PASSWORD", PASSWORD_KEY),
                secret_env(&secret_name, "POSTGRES_DB", DATABASE_KEY),
                // on the emptyDir, which fsGroup makes writable for any uid the pod runs as
                EnvVar { name: "PGDATA".to_string(), value: Some(format!("{DATA_DIR}/pgdata")), ..EnvVar::default() },
            ]),
            ports: Some(vec![ContainerPort {
                name: Some("postgres".to_string()),
                container_port: i32::from(POSTGRES_PORT),
                protocol: Some("TCP".to_string()),
                ..ContainerPort::default()
            }]),
            // over TCP, so the entrypoint's socket-only init server does not count as ready;
            // with -U, because the probe runs without the entrypoint's passwd entry for the uid
            readiness_probe: Some(Probe {
                exec: Some(ExecAction {
                    command: Some(
                        ["pg_isready", "-h", "127.0.0.1", "-p", &port, "-U", &pg.user, "-d", &pg.database]
                            .iter()
                            .map(|s| s.to_string())
                            .collect(),
                    ),
                }),
                period_seconds: Some(1),
                timeout_seconds: Some(2),
                failure_threshold: Some(3),
                ..Probe::default()
            }),
            resources: Some(ResourceRequirements {
                requests: quantities(&pg.resources.requests),
                limits: quantities(&pg.resources.limits),
                ..ResourceRequirements::default()
            }),
            security_context: Some(container_security()),
            volume_mounts: Some(vec![VolumeMount {
                name: "data".to_string(),
                mount_path: DATA_DIR.to_string(),
                ..VolumeMount::default()
            }]),
            ..Container::default()
        };
        let deployment = Deployment {
            metadata: meta(&instance, namespace, run),
            spec: DeploymentSpec {
                replicas: Some(1),
                strategy: Some(DeploymentStrategy {
                    type_: Some("Recreate".to_string()),
                    ..DeploymentStrategy::default()
                }),
                selector: LabelSelector { match_labels: Some(selector_labels(run_id)), ..LabelSelector::default() },
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(pod_labels(run_id)),
                        annotations: Some(BTreeMap::from([(
                            CREDENTIALS_HASH_ANNOTATION.to_string(),
                            credentials_hash(password),
                        )])),
                        ..ObjectMeta::default()
                    }),
                    spec: Some(PodSpec {
                        containers: vec![container],
                        security_context: Some(pod_security(pg)),
                        volumes: Some(vec![Volume {
                            name: "data".to_string(),
                            empty_dir: Some(EmptyDirVolumeSource::default()),
                            ..Volume::default()
                        }]),
                        termination_grace_period_seconds: Some(5),
                        enable_service_links: Some(false),
                        automount_service_account_token: Some(false),
                        ..PodSpec::default()
                    }),
                },
                ..DeploymentSpec::default()
            },
            ..Deployment::default()
        };
        Manifests { namespace: namespace_obj, secret, service, deployment }
    }

    /// All objects as one YAML stream (`---` between documents), in apply order.
    pub(crate) fn to_yaml(&self) -> String {
        let mut docs = Vec::new();
        if let Some(ns) = &self.namespace {
            docs.push(serde_yaml::to_string(ns));
        }
        docs.push(serde_yaml::to_string(&self.secret));
        docs.push(serde_yaml::to_string(&self.service));
        docs.push(serde_yaml::to_string(&self.deployment));
        docs.into_iter().map(|r| r.expect("k8s objects serialise")).collect::<Vec<_>>().join("---\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::{expect, Expect};

    fn run() -> RunMeta {
        let t = DateTime::parse_from_rfc3339("2024-06-15T12:00:00Z").unwrap().with_timezone(&Utc);
        RunMeta {
            run_id: "3f9a1c2b".into(),
            created_at: t,
            renewed_at: t + chrono::Duration::hours(1),
            created_by: "https://ci.example/job/7".into(),
        }
    }

    fn check(exposure: Exposure, expect: Expect) {
        let pg = PostgresSettings::default();
        expect.assert_eq(&Manifests::new(&pg, "e2e", "not-a-real-password", exposure, &run(), true).to_yaml());
    }

    #[test]
    fn kind_manifests_publish_a_node_port() {
        check(
            Exposure::NodePort(30432),
            expect![[r#"
                apiVersion: v1
                kind: Namespace
                metadata:
                  annotations:
                    e2e-migrations/created-by: https://ci.example/job/7
                  labels:
                    app.kubernetes.io/managed-by: e2e-migrations
                    e2e-migrations/created-at: 20240615T120000Z
                    e2e-migrations/renewed-at: 20240615T130000Z
                    e2e-migrations/run-id: 3f9a1c2b
                  name: e2e
                ---
                apiVersion: v1
                kind: Secret
                data:
                  POSTGRES_DB: ZTJl
                  POSTGRES_PASSWORD: bm90LWEtcmVhbC1wYXNzd29yZA==
                  POSTGRES_USER: ZTJl
                metadata:
                  annotations:
                    e2e-migrations/created-by: https://ci.example/job/7
                  labels:
                    app.kubernetes.io/instance: postgres-3f9a1c2b
                    app.kubernetes.io/managed-by: e2e-migrations
                    app.kubernetes.io/name: postgres
                    e2e-migrations/created-at: 20240615T120000Z
                    e2e-migrations/renewed-at: 20240615T130000Z
                    e2e-migrations/run-id: 3f9a1c2b
                  name: postgres-3f9a1c2b-credentials
                  namespace: e2e
                type: Opaque
                ---
                apiVersion: v1
                kind: Service
                metadata:
                  annotations:
                    e2e-migrations/created-by: https://ci.example/job/7
                  labels:
                    app.kubernetes.io/instance: postgres-3f9a1c2b
                    app.kubernetes.io/managed-by: e2e-migrations
                    app.kubernetes.io/name: postgres
                    e2e-migrations/created-at: 20240615T120000Z
                    e2e-migrations/renewed-at: 20240615T130000Z
                    e2e-migrations/run-id: 3f9a1c2b
                  name: postgres-3f9a1c2b
                  namespace: e2e
                spec:
                  ports:
                  - name: postgres
                    nodePort: 30432
                    port: 5432
                    protocol: TCP
                    targetPort: 5432
                  selector:
                    app.kubernetes.io/instance: postgres-3f9a1c2b
                    app.kubernetes.io/managed-by: e2e-migrations
                    app.kubernetes.io/name: postgres
                  type: NodePort
                ---
                apiVersion: apps/v1
                kind: Deployment
                metadata:
                  annotations:
                    e2e-migrations/created-by: https://ci.example/job/7
                  labels:
                    app.kubernetes.io/instance: postgres-3f9a1c2b
                    app.kubernetes.io/managed-by: e2e-migrations
                    app.kubernetes.io/name: postgres
                    e2e-migrations/created-at: 20240615T120000Z
                    e2e-migrations/renewed-at: 20240615T130000Z
                    e2e-migrations/run-id: 3f9a1c2b
                  name: postgres-3f9a1c2b
                  namespace: e2e
                spec:
                  replicas: 1
                  selector:
                    matchLabels:
                      app.kubernetes.io/instance: postgres-3f9a1c2b
                      app.kubernetes.io/managed-by: e2e-migrations
                      app.kubernetes.io/name: postgres
                  strategy:
                    type: Recreate
                  template:
                    metadata:
                      annotations:
                        e2e-migrations/credentials-hash: a7c525e3923e913b
                      labels:
                        app.kubernetes.io/instance: postgres-3f9a1c2b
                        app.kubernetes.io/managed-by: e2e-migrations
                        app.kubernetes.io/name: postgres
                        e2e-migrations/run-id: 3f9a1c2b
                    spec:
                      automountServiceAccountToken: false
                      containers:
                      - args:
                        - postgres
                        - -c
                        - fsync=off
                        - -c
                        - full_page_writes=off
                        env:
                        - name: POSTGRES_USER
                          valueFrom:
                            secretKeyRef:
                              key: POSTGRES_USER
                              name: postgres-3f9a1c2b-credentials
                        - name: POSTGRES_PASSWORD
                          valueFrom:
                            secretKeyRef:
                              key: POSTGRES_PASSWORD
                              name: postgres-3f9a1c2b-credentials
                        - name: POSTGRES_DB
                          valueFrom:
                            secretKeyRef:
                              key: POSTGRES_DB
                              name: postgres-3f9a1c2b-credentials
                        - name: PGDATA
                          value: /var/lib/postgresql/data/pgdata
                        image: postgres:16.6-bookworm
                        imagePullPolicy: IfNotPresent
                        name: postgres
                        ports:
                        - containerPort: 5432
                          name: postgres
                          protocol: TCP
                        readinessProbe:
                          exec:
                            command:
                            - pg_isready
                            - -h
                            - 127.0.0.1
                            - -p
                            - '5432'
                            - -U
                            - e2e
                            - -d
                            - e2e
                          failureThreshold: 3
                          periodSeconds: 1
                          timeoutSeconds: 2
                        resources:
                          limits:
                            cpu: '1'
                            memory: 512Mi
                          requests:
                            cpu: 100m
                            memory: 256Mi
                        securityContext:
                          allowPrivilegeEscalation: false
                          capabilities:
                            drop:
                            - ALL
                          privileged: false
                          runAsNonRoot: true
                          seccompProfile:
                            type: RuntimeDefault
                        volumeMounts:
                        - mountPath: /var/lib/postgresql/data
                          name: data
                      enableServiceLinks: false
                      securityContext:
                        fsGroup: 999
                        runAsGroup: 999
                        runAsNonRoot: true
                        runAsUser: 999
                        seccompProfile:
                          type: RuntimeDefault
                      terminationGracePeriodSeconds: 5
                      volumes:
                      - emptyDir: {}
                        name: data
            "#]],
        );
    }

    #[test]
    fn kube_service_is_cluster_ip_only() {
        let pg = PostgresSettings::default();
        let m = Manifests::new(&pg, "team-a", "pw", Exposure::ClusterIp, &run(), false);
        expect![[r#"
            apiVersion: v1
            kind: Service
            metadata:
              annotations:
                e2e-migrations/created-by: https://ci.example/job/7
              labels:
                app.kubernetes.io/instance: postgres-3f9a1c2b
                app.kubernetes.io/managed-by: e2e-migrations
                app.kubernetes.io/name: postgres
                e2e-migrations/created-at: 20240615T120000Z
                e2e-migrations/renewed-at: 20240615T130000Z
                e2e-migrations/run-id: 3f9a1c2b
              name: postgres-3f9a1c2b
              namespace: team-a
            spec:
              ports:
              - name: postgres
                port: 5432
                protocol: TCP
                targetPort: 5432
              selector:
                app.kubernetes.io/instance: postgres-3f9a1c2b
                app.kubernetes.io/managed-by: e2e-migrations
                app.kubernetes.io/name: postgres
              type: ClusterIP
        "#]]
        .assert_eq(&serde_yaml::to_string(&m.service).unwrap());
    }

    #[test]
    fn every_service_port_says_tcp() {
        for exposure in [Exposure::NodePort(30432), Exposure::ClusterIp] {
            let m = Manifests::new(&PostgresSettings::default(), "e2e", "pw", exposure, &run(), true);
            let ports = m.service.spec.unwrap().ports.unwrap();
            assert!(ports.iter().all(|p| p.protocol.as_deref() == Some("TCP")), "{exposure:?}");
        }
    }

    #[test]
    fn a_new_password_rolls_the_pod() {
        let pg = PostgresSettings::default();
        let a = Manifests::new(&pg, "e2e", "one", Exposure::ClusterIp, &run(), true).deployment;
        let b = Manifests::new(&pg, "e2e", "two", Exposure::ClusterIp, &run(), true).deployment;
        assert_ne!(a.spec.template.metadata, b.spec.template.metadata);
    }

    #[test]
    fn a_warm_setup_renews_the_labels_without_rolling_the_pod() {
        let pg = PostgresSettings::default();
        let first = Manifests::new(&pg, "e2e", "pw", Exposure::ClusterIp, &run(), true);
        let mut later = run();
        later.renewed_at += chrono::Duration::hours(5);
        let warm = Manifests::new(&pg, "e2e", "pw", Exposure::ClusterIp, &later, true);
        assert_eq!(first.deployment.spec.template, warm.deployment.spec.template);
        assert_ne!(first.deployment.metadata.labels, warm.deployment.metadata.labels);
    }

    #[test]
    fn in_a_namespace_someone_else_made_the_namespace_is_not_among_the_objects() {
        let pg = PostgresSettings::default();
        let m = Manifests::new(&pg, "team-a", "pw", Exposure::ClusterIp, &run(), false);
        assert!(m.namespace.is_none());
        assert!(!m.to_yaml().contains("kind: Namespace"));
        for labels in [&m.secret.metadata.labels, &m.service.metadata.labels, &m.deployment.metadata.labels] {
            let l = labels.as_ref().unwrap();
            assert_eq!(l.get(RUN_ID_LABEL).map(String::as_str), Some("3f9a1c2b"));
            assert_eq!(l.get(CREATED_AT_LABEL).map(String::as_str), Some("20240615T120000Z"));
            assert_eq!(l.get(MANAGED_BY_LABEL).map(String::as_str), Some(MANAGED_BY));
        }
    }

    #[test]
    fn two_runs_share_no_name_and_select_only_their_own_pod() {
        let pg = PostgresSettings::default();
        let a = Manifests::new(&pg, "team-a", "pw", Exposure::ClusterIp, &run(), false);
        let mut other = run();
        other.run_id = "77aa01ff".into();
        let b = Manifests::new(&pg, "team-a", "pw", Exposure::ClusterIp, &other, false);
        for (x, y) in [
            (&a.secret.metadata.name, &b.secret.metadata.name),
            (&a.service.metadata.name, &b.service.metadata.name),
            (&a.deployment.metadata.name, &b.deployment.metadata.name),
        ] {
            assert_ne!(x, y);
        }
        let sel_a = a.deployment.spec.selector.match_labels.clone().unwrap();
        let pod_b = b.deployment.spec.template.metadata.clone().unwrap().labels.unwrap();
        assert!(!sel_a.iter().all(|(k, v)| pod_b.get(k) == Some(v)), "run a's selector must not match run b's pod");
        assert_eq!(a.service.spec.as_ref().unwrap().selector.as_ref(), Some(&sel_a));
    }
}
