//! The typed Kubernetes objects for PostgreSQL in the cluster (k8s-openapi), rendered for
//! server-side apply and, as YAML, for `--dry-run` and the snapshot tests.

use std::collections::BTreeMap;

use e2e_migrations::kube::{
    APP_LABEL, APP_NAME, DATABASE_KEY, MANAGED_BY, MANAGED_BY_LABEL, PASSWORD_KEY, POSTGRES_PORT, SECRET_NAME, USER_KEY,
};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource, ExecAction, Namespace, PodSpec,
    PodTemplateSpec, Probe, ResourceRequirements, Secret, SecretKeySelector, Service, ServicePort, ServiceSpec, Volume,
    VolumeMount,
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

/// The objects, in apply order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Manifests {
    /// The namespace, labelled as ours.
    pub(crate) namespace: Namespace,
    /// The credentials.
    pub(crate) secret: Secret,
    /// The Service.
    pub(crate) service: Service,
    /// PostgreSQL.
    pub(crate) deployment: Deployment,
}

/// The labels on everything we make.
pub(crate) fn managed_labels() -> BTreeMap<String, String> {
    BTreeMap::from([(MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string())])
}

fn app_labels() -> BTreeMap<String, String> {
    let mut l = managed_labels();
    l.insert(APP_LABEL.to_string(), APP_NAME.to_string());
    l
}

fn meta(name: &str, namespace: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(namespace.to_string()),
        labels: Some(app_labels()),
        ..ObjectMeta::default()
    }
}

fn secret_env(name: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: SECRET_NAME.to_string(),
                key: key.to_string(),
                optional: None,
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// A short stable hash (FNV-1a 64, hex) of the password, for the pod-template annotation.
pub(crate) fn credentials_hash(password: &str) -> String {
    let h = password.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    format!("{h:016x}")
}

impl Manifests {
    /// Builds the objects for `pg` in `namespace` with `password` (pure).
    pub(crate) fn new(pg: &PostgresSettings, namespace: &str, password: &str, exposure: Exposure) -> Manifests {
        let namespace_obj = Namespace {
            metadata: ObjectMeta {
                name: Some(namespace.to_string()),
                labels: Some(managed_labels()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        let data = [(USER_KEY, pg.user.as_str()), (PASSWORD_KEY, password), (DATABASE_KEY, pg.database.as_str())];
        let secret = Secret {
            metadata: meta(SECRET_NAME, namespace),
            type_: Some("Opaque".to_string()),
            data: Some(data.iter().map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec()))).collect()),
            ..Secret::default()
        };
        let (type_, node_port) = match exposure {
            Exposure::NodePort(p) => ("NodePort", Some(i32::from(p))),
            Exposure::ClusterIp => ("ClusterIP", None),
        };
        let service = Service {
            metadata: meta(APP_NAME, namespace),
            spec: Some(ServiceSpec {
                type_: Some(type_.to_string()),
                selector: Some(app_labels()),
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
                secret_env("POSTGRES_USER", USER_KEY),
                secret_env("POSTGRES_PASSWORD", PASSWORD_KEY),
                secret_env("POSTGRES_DB", DATABASE_KEY),
                EnvVar { name: "PGDATA".to_string(), value: Some(format!("{DATA_DIR}/pgdata")), ..EnvVar::default() },
            ]),
            ports: Some(vec![ContainerPort {
                name: Some("postgres".to_string()),
                container_port: i32::from(POSTGRES_PORT),
                protocol: Some("TCP".to_string()),
                ..ContainerPort::default()
            }]),
            // over TCP, so the entrypoint's socket-only init server does not count as ready
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
                requests: Some(BTreeMap::from([
                    ("cpu".to_string(), Quantity("100m".to_string())),
                    ("memory".to_string(), Quantity("256Mi".to_string())),
                ])),
                ..ResourceRequirements::default()
            }),
            volume_mounts: Some(vec![VolumeMount {
                name: "data".to_string(),
                mount_path: DATA_DIR.to_string(),
                ..VolumeMount::default()
            }]),
            ..Container::default()
        };
        let deployment = Deployment {
            metadata: meta(APP_NAME, namespace),
            spec: DeploymentSpec {
                replicas: Some(1),
                strategy: Some(DeploymentStrategy {
                    type_: Some("Recreate".to_string()),
                    ..DeploymentStrategy::default()
                }),
                selector: LabelSelector { match_labels: Some(app_labels()), ..LabelSelector::default() },
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(app_labels()),
                        annotations: Some(BTreeMap::from([(
                            CREDENTIALS_HASH_ANNOTATION.to_string(),
                            credentials_hash(password),
                        )])),
                        ..ObjectMeta::default()
                    }),
                    spec: Some(PodSpec {
                        containers: vec![container],
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
        [
            serde_yaml::to_string(&self.namespace),
            serde_yaml::to_string(&self.secret),
            serde_yaml::to_string(&self.service),
            serde_yaml::to_string(&self.deployment),
        ]
        .into_iter()
        .map(|r| r.expect("k8s objects serialise"))
        .collect::<Vec<_>>()
        .join("---\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::{expect, Expect};

    fn check(exposure: Exposure, expect: Expect) {
        let pg = PostgresSettings::default();
        expect.assert_eq(&Manifests::new(&pg, "e2e", "not-a-real-password", exposure).to_yaml());
    }

    #[test]
    fn kind_manifests_publish_a_node_port() {
        check(
            Exposure::NodePort(30432),
            expect![[r#"
                apiVersion: v1
                kind: Namespace
                metadata:
                  labels:
                    app.kubernetes.io/managed-by: e2e-migrations
                  name: e2e
                ---
                apiVersion: v1
                kind: Secret
                data:
                  POSTGRES_DB: ZTJl
                  POSTGRES_PASSWORD: bm90LWEtcmVhbC1wYXNzd29yZA==
                  POSTGRES_USER: ZTJl
                metadata:
                  labels:
                    app.kubernetes.io/managed-by: e2e-migrations
                    app.kubernetes.io/name: postgres
                  name: postgres-credentials
                  namespace: e2e
                type: Opaque
                ---
                apiVersion: v1
                kind: Service
                metadata:
                  labels:
                    app.kubernetes.io/managed-by: e2e-migrations
                    app.kubernetes.io/name: postgres
                  name: postgres
                  namespace: e2e
                spec:
                  ports:
                  - name: postgres
                    nodePort: 30432
                    port: 5432
                    protocol: TCP
                    targetPort: 5432
                  selector:
                    app.kubernetes.io/managed-by: e2e-migrations
                    app.kubernetes.io/name: postgres
                  type: NodePort
                ---
                apiVersion: apps/v1
                kind: Deployment
                metadata:
                  labels:
                    app.kubernetes.io/managed-by: e2e-migrations
                    app.kubernetes.io/name: postgres
                  name: postgres
                  namespace: e2e
                spec:
                  replicas: 1
                  selector:
                    matchLabels:
                      app.kubernetes.io/managed-by: e2e-migrations
                      app.kubernetes.io/name: postgres
                  strategy:
                    type: Recreate
                  template:
                    metadata:
                      annotations:
                        e2e-migrations/credentials-hash: a7c525e3923e913b
                      labels:
                        app.kubernetes.io/managed-by: e2e-migrations
                        app.kubernetes.io/name: postgres
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
                              name: postgres-credentials
                        - name: POSTGRES_PASSWORD
                          valueFrom:
                            secretKeyRef:
                              key: POSTGRES_PASSWORD
                              name: postgres-credentials
                        - name: POSTGRES_DB
                          valueFrom:
                            secretKeyRef:
                              key: POSTGRES_DB
                              name: postgres-credentials
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
                          requests:
                            cpu: 100m
                            memory: 256Mi
                        volumeMounts:
                        - mountPath: /var/lib/postgresql/data
                          name: data
                      enableServiceLinks: false
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
        let m = Manifests::new(&pg, "team-a", "pw", Exposure::ClusterIp);
        expect![[r#"
            apiVersion: v1
            kind: Service
            metadata:
              labels:
                app.kubernetes.io/managed-by: e2e-migrations
                app.kubernetes.io/name: postgres
              name: postgres
              namespace: team-a
            spec:
              ports:
              - name: postgres
                port: 5432
                protocol: TCP
                targetPort: 5432
              selector:
                app.kubernetes.io/managed-by: e2e-migrations
                app.kubernetes.io/name: postgres
              type: ClusterIP
        "#]]
        .assert_eq(&serde_yaml::to_string(&m.service).unwrap());
    }

    #[test]
    fn every_service_port_says_tcp() {
        for exposure in [Exposure::NodePort(30432), Exposure::ClusterIp] {
            let m = Manifests::new(&PostgresSettings::default(), "e2e", "pw", exposure);
            let ports = m.service.spec.unwrap().ports.unwrap();
            assert!(ports.iter().all(|p| p.protocol.as_deref() == Some("TCP")), "{exposure:?}");
        }
    }

    #[test]
    fn a_new_password_rolls_the_pod() {
        let pg = PostgresSettings::default();
        let a = Manifests::new(&pg, "e2e", "one", Exposure::ClusterIp).deployment;
        let b = Manifests::new(&pg, "e2e", "two", Exposure::ClusterIp).deployment;
        assert_ne!(a.spec.template.metadata, b.spec.template.metadata);
    }
}
