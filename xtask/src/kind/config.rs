//! The settings file (`e2e.toml`, optional) and the typed Kind cluster config built from it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// The node label that marks a Kind cluster as created by `e2e-setup` (value [`OWNER_VALUE`]).
pub(crate) const OWNER_LABEL: &str = "e2e-migrations/owner";

/// The value of [`OWNER_LABEL`].
pub(crate) const OWNER_VALUE: &str = "xtask-e2e-setup";

/// The node label carrying a hash of the cluster config, so a changed config is noticed on reuse.
pub(crate) const CONFIG_HASH_LABEL: &str = "e2e-migrations/config-hash";

/// The settings file's name at the workspace root.
pub(crate) const CONFIG_FILE: &str = "e2e.toml";

/// The settings for the kind and kube backends: `e2e.toml`, every field optional.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct E2eConfig {
    /// The Kind cluster.
    pub(crate) cluster: ClusterSettings,
    /// PostgreSQL in the cluster.
    pub(crate) postgres: PostgresSettings,
    /// Extra host ports the Kind node publishes on 127.0.0.1 (for the services' own NodePorts).
    pub(crate) port_mappings: Vec<PortMapping>,
    /// An existing cluster (`--backend kube`).
    pub(crate) kube: KubeSettings,
}

/// `[kube]`: an existing cluster.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct KubeSettings {
    /// Work in a namespace someone else made (as `--existing-namespace`): setup never reads,
    /// creates or deletes the namespace, and owns only the objects it creates in it.
    pub(crate) existing_namespace: bool,
}

/// `[cluster]`: the Kind cluster.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct ClusterSettings {
    /// The cluster name (`kind create cluster --name`).
    pub(crate) name: String,
    /// The node image, pinned (e.g. `kindest/node:v1.31.2@sha256:...`); default: the one the
    /// installed kind release pins.
    pub(crate) node_image: Option<String>,
    /// Extra labels on the node.
    pub(crate) labels: BTreeMap<String, String>,
    /// kubeadm config patches for the node (YAML documents), where a cluster needs them.
    pub(crate) kubeadm_config_patches: Vec<String>,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            name: "e2e-migrations".to_string(),
            node_image: None,
            labels: BTreeMap::new(),
            kubeadm_config_patches: Vec::new(),
        }
    }
}

/// `[postgres]`: the PostgreSQL deployment.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct PostgresSettings {
    /// The image, pinned.
    pub(crate) image: String,
    /// `Always`, `IfNotPresent` or `Never` (a cluster with no registry needs `Never`).
    pub(crate) image_pull_policy: String,
    /// The namespace (kind; `--backend kube` takes `--namespace`).
    pub(crate) namespace: String,
    /// The database user.
    pub(crate) user: String,
    /// The database name.
    pub(crate) database: String,
    /// Kind: the NodePort of the PostgreSQL Service (30000-32767).
    pub(crate) node_port: u16,
    /// Kind: the host port on 127.0.0.1 that the node publishes for the NodePort.
    pub(crate) host_port: u16,
    /// Seconds to wait for PostgreSQL to become ready.
    pub(crate) ready_timeout_s: u64,
    /// Extra server settings (`-c name=value`) after the test-speed ones.
    pub(crate) settings: Vec<String>,
    /// The uid the pod runs as (`runAsUser`): non-root, one the image can run as (999 is the
    /// `postgres` account of the official image); `"platform"` leaves it to the platform
    /// (OpenShift's restricted SCC assigns one from the namespace's range).
    pub(crate) run_as_user: IdSetting,
    /// The primary gid (`runAsGroup`), or `"platform"`.
    pub(crate) run_as_group: IdSetting,
    /// The gid that owns the data volume (`fsGroup`), so that any uid in it can write, or
    /// `"platform"`.
    pub(crate) fs_group: IdSetting,
    /// Requests and limits of the PostgreSQL container.
    pub(crate) resources: ResourceSettings,
}

/// A uid or gid in `e2e.toml`: a number, or `"platform"` (left for the platform to assign).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum IdSetting {
    /// This id.
    Id(i64),
    /// A word; only `"platform"` is valid ([`E2eConfig::validate`] says so).
    Word(String),
}

impl<'de> Deserialize<'de> for IdSetting {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<IdSetting, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = IdSetting;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a non-root id such as 999, or \"platform\"")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> std::result::Result<IdSetting, E> {
                Ok(IdSetting::Id(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<IdSetting, E> {
                Ok(IdSetting::Word(v.to_string()))
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl IdSetting {
    /// The id to put in the manifest, or `None` when the platform assigns it.
    pub(crate) fn get(&self) -> Option<i64> {
        match self {
            IdSetting::Id(n) => Some(*n),
            IdSetting::Word(_) => None,
        }
    }

    fn check(&self, field: &str) -> Result<()> {
        match self {
            IdSetting::Id(0) => bail!(
                "postgres.{field} 0 is root, which the restricted Pod Security Standard forbids: use the image's \
                 postgres account (999 in the official image), another non-root id, or \"platform\""
            ),
            IdSetting::Id(n) if !(1..=i64::from(i32::MAX)).contains(n) => {
                bail!("postgres.{field} {n}: expected 1-{} or \"platform\"", i32::MAX)
            }
            IdSetting::Id(_) => Ok(()),
            IdSetting::Word(w) if w == "platform" => Ok(()),
            IdSetting::Word(w) => bail!("postgres.{field} {w:?}: expected a non-root id such as 999, or \"platform\""),
        }
    }
}

/// `[postgres.resources]`: Kubernetes quantities by resource name (`cpu`, `memory`,
/// `ephemeral-storage`, ...). Limits as well as requests, so that a namespace with a LimitRange
/// or a ResourceQuota accepts the pod.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct ResourceSettings {
    /// What the scheduler reserves.
    pub(crate) requests: BTreeMap<String, String>,
    /// The most the container may use.
    pub(crate) limits: BTreeMap<String, String>,
}

impl Default for ResourceSettings {
    fn default() -> Self {
        let map = |cpu: &str, memory: &str| {
            BTreeMap::from([("cpu".to_string(), cpu.to_string()), ("memory".to_string(), memory.to_string())])
        };
        ResourceSettings { requests: map("100m", "256Mi"), limits: map("1", "512Mi") }
    }
}

/// A Kubernetes quantity's value in base units (`100m` = 0.1, `1Ki` = 1024, `1e3` = 1000), or
/// `None` when it is not a quantity (pure).
pub(crate) fn parse_quantity(q: &str) -> Option<f64> {
    const SUFFIXES: &[(&str, f64)] = &[
        ("Ki", 1024.0),
        ("Mi", 1_048_576.0),
        ("Gi", 1_073_741_824.0),
        ("Ti", 1_099_511_627_776.0),
        ("Pi", 1_125_899_906_842_624.0),
        ("Ei", 1_152_921_504_606_846_976.0),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    let (number, factor) = SUFFIXES.iter().find_map(|(s, f)| q.strip_suffix(s).map(|n| (n, *f))).unwrap_or((q, 1.0));
    let (mantissa, exponent) = match number.split_once(['e', 'E']) {
        Some((m, e)) if factor == 1.0 => (m, e.parse::<i32>().ok()?),
        Some(_) => return None,
        None => (number, 0),
    };
    let digits = mantissa.strip_prefix('+').unwrap_or(mantissa);
    if digits.is_empty()
        || !digits.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        || digits.bytes().filter(|b| *b == b'.').count() > 1
        || digits == "."
    {
        return None;
    }
    Some(digits.parse::<f64>().ok()? * 10f64.powi(exponent) * factor)
}

impl ResourceSettings {
    fn check(&self) -> Result<()> {
        for (kind, map) in [("requests", &self.requests), ("limits", &self.limits)] {
            for (name, q) in map {
                if parse_quantity(q).is_none() {
                    bail!(
                        "postgres.resources.{kind}.{name} {q:?}: not a Kubernetes quantity (e.g. 500m, 1, 256Mi, 1Gi)"
                    );
                }
            }
        }
        for (name, limit) in &self.limits {
            if let Some(request) = self.requests.get(name) {
                if parse_quantity(request) > parse_quantity(limit) {
                    bail!(
                        "postgres.resources.requests.{name} {request} is above limits.{name} {limit}: the API server refuses that"
                    );
                }
            }
        }
        Ok(())
    }
}

impl Default for PostgresSettings {
    fn default() -> Self {
        PostgresSettings {
            image: "postgres:16.6-bookworm".to_string(),
            image_pull_policy: "IfNotPresent".to_string(),
            namespace: "e2e".to_string(),
            user: "e2e".to_string(),
            database: "e2e".to_string(),
            node_port: 30432,
            host_port: 15432,
            ready_timeout_s: 180,
            settings: Vec::new(),
            run_as_user: IdSetting::Id(999),
            run_as_group: IdSetting::Id(999),
            fs_group: IdSetting::Id(999),
            resources: ResourceSettings::default(),
        }
    }
}

/// `[[port_mappings]]`: one service's NodePort published on 127.0.0.1.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PortMapping {
    /// What it is for (a service name), for messages.
    pub(crate) name: String,
    /// The NodePort in the cluster.
    pub(crate) node_port: u16,
    /// The host port on 127.0.0.1.
    pub(crate) host_port: u16,
}

impl E2eConfig {
    /// Reads `path` if given (it must exist), else `default_path` if it exists, else defaults.
    pub(crate) fn load(explicit: Option<&Path>, default_path: &Path) -> Result<(E2eConfig, Option<PathBuf>)> {
        let path = match explicit {
            Some(p) => p.to_path_buf(),
            None if default_path.is_file() => default_path.to_path_buf(),
            None => return Ok((E2eConfig::default(), None)),
        };
        // the file named, and where the name came from (the flag and its variable alike)
        let origin = if explicit.is_some() { " (--config or E2E_CONFIG)" } else { "" };
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("settings file {}{origin}: cannot read it", path.display()))?;
        let config = E2eConfig::parse(&text).with_context(|| format!("settings file {}", path.display()))?;
        Ok((config, Some(path)))
    }

    /// Parses and validates the file's text (pure).
    pub(crate) fn parse(text: &str) -> Result<E2eConfig> {
        let config: E2eConfig = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks names and ports; each error names the field at fault.
    pub(crate) fn validate(&self) -> Result<()> {
        check_dns_label("cluster.name", &self.cluster.name)?;
        check_dns_label("postgres.namespace", &self.postgres.namespace)?;
        if self.postgres.image.trim().is_empty() {
            bail!("postgres.image is empty: name a pinned PostgreSQL image such as postgres:16.6-bookworm");
        }
        if !["Always", "IfNotPresent", "Never"].contains(&self.postgres.image_pull_policy.as_str()) {
            bail!(
                "postgres.image_pull_policy {:?}: expected Always, IfNotPresent or Never",
                self.postgres.image_pull_policy
            );
        }
        self.postgres.run_as_user.check("run_as_user")?;
        self.postgres.run_as_group.check("run_as_group")?;
        self.postgres.fs_group.check("fs_group")?;
        self.postgres.resources.check()?;
        // PostgreSQL takes a port per checkout sharing the cluster: node_port + 0..SLOTS
        let slot = |field: &str, n: u16| match n {
            0 => format!("postgres.{field}"),
            n => format!("postgres.{field} + {n} (a checkout's port slot on the shared cluster)"),
        };
        let slots = 0..super::share::SLOTS;
        let mut node_ports: Vec<(String, u32)> =
            slots.clone().map(|n| (slot("node_port", n), u32::from(self.postgres.node_port) + u32::from(n))).collect();
        let mut host_ports: Vec<(String, u32)> =
            slots.map(|n| (slot("host_port", n), u32::from(self.postgres.host_port) + u32::from(n))).collect();
        if host_ports.iter().any(|(_, p)| *p > u32::from(u16::MAX)) {
            bail!(
                "postgres.host_port {}: the {} port slots above it must stay below 65536",
                self.postgres.host_port,
                super::share::SLOTS
            );
        }
        for m in &self.port_mappings {
            node_ports.push((format!("port_mappings {:?} node_port", m.name), u32::from(m.node_port)));
            host_ports.push((format!("port_mappings {:?} host_port", m.name), u32::from(m.host_port)));
        }
        for (what, port) in &node_ports {
            if !(30000..=32767).contains(port) {
                bail!("{what} {port}: a NodePort must be in 30000-32767");
            }
        }
        for (what, port) in &host_ports {
            if *port == 0 {
                bail!("{what} is 0: name a free port on 127.0.0.1");
            }
        }
        for list in [&node_ports, &host_ports] {
            for (i, (what, port)) in list.iter().enumerate() {
                if let Some((other, _)) = list[..i].iter().find(|(_, p)| p == port) {
                    bail!("{what} {port} is also {other}");
                }
            }
        }
        Ok(())
    }
}

/// Rejects what Kubernetes (and kind) would refuse as a name: lower-case letters, digits and
/// `-`, starting and ending alphanumeric, at most 63 characters.
pub(crate) fn check_dns_label(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !ok {
        bail!(
            "{what} {name:?}: use 1-63 lower-case letters, digits and '-', starting and ending with a letter or digit"
        );
    }
    Ok(())
}

/// A Kind `Cluster` config (`kind.x-k8s.io/v1alpha4`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct KindCluster {
    /// Always `Cluster`.
    pub(crate) kind: &'static str,
    /// Always `kind.x-k8s.io/v1alpha4`.
    pub(crate) api_version: &'static str,
    /// The cluster name.
    pub(crate) name: String,
    /// The nodes.
    pub(crate) nodes: Vec<KindNode>,
}

/// One Kind node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct KindNode {
    /// `control-plane` or `worker`.
    pub(crate) role: &'static str,
    /// The node image, when pinned in the settings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) image: Option<String>,
    /// Node labels (ownership marker, config hash, extra labels).
    pub(crate) labels: BTreeMap<String, String>,
    /// Host ports published by the node container.
    pub(crate) extra_port_mappings: Vec<KindPortMapping>,
    /// kubeadm patches.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) kubeadm_config_patches: Vec<String>,
}

/// One published port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct KindPortMapping {
    /// The port inside the node (a NodePort).
    pub(crate) container_port: u16,
    /// The host port.
    pub(crate) host_port: u16,
    /// Always `127.0.0.1`: nothing listens beyond this machine.
    pub(crate) listen_address: &'static str,
    /// Always `TCP`.
    pub(crate) protocol: &'static str,
}

impl KindCluster {
    /// The cluster for `config`: one control-plane node publishing PostgreSQL's NodePort and
    /// every `[[port_mappings]]` on 127.0.0.1, labelled as ours with the config's hash.
    pub(crate) fn from_config(config: &E2eConfig) -> KindCluster {
        // a port per checkout that shares the cluster (see `share`)
        let mut mappings: Vec<KindPortMapping> =
            super::share::slot_ports(config.postgres.node_port, config.postgres.host_port)
                .into_iter()
                .map(|(node, host)| KindPortMapping {
                    container_port: node,
                    host_port: host,
                    listen_address: "127.0.0.1",
                    protocol: "TCP",
                })
                .collect();
        mappings.extend(config.port_mappings.iter().map(|m| KindPortMapping {
            container_port: m.node_port,
            host_port: m.host_port,
            listen_address: "127.0.0.1",
            protocol: "TCP",
        }));
        let mut labels = config.cluster.labels.clone();
        labels.insert(OWNER_LABEL.to_string(), OWNER_VALUE.to_string());
        let mut cluster = KindCluster {
            kind: "Cluster",
            api_version: "kind.x-k8s.io/v1alpha4",
            name: config.cluster.name.clone(),
            nodes: vec![KindNode {
                role: "control-plane",
                image: config.cluster.node_image.clone(),
                labels,
                extra_port_mappings: mappings,
                kubeadm_config_patches: config.cluster.kubeadm_config_patches.clone(),
            }],
        };
        let hash = cluster.hash();
        cluster.nodes[0].labels.insert(CONFIG_HASH_LABEL.to_string(), hash);
        cluster
    }

    /// A stable hash of the config without the hash label (FNV-1a 64, hex): a reused cluster
    /// whose label differs was created from another config.
    pub(crate) fn hash(&self) -> String {
        let mut unhashed = self.clone();
        for n in &mut unhashed.nodes {
            n.labels.remove(CONFIG_HASH_LABEL);
        }
        format!("{:016x}", fnv1a(unhashed.to_yaml().as_bytes()))
    }

    /// The config file's text.
    pub(crate) fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).expect("a kind config serialises")
    }
}

pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::{expect, Expect};

    fn check(toml: &str, expect: Expect) {
        let config = E2eConfig::parse(toml).unwrap();
        expect.assert_eq(&KindCluster::from_config(&config).to_yaml());
    }

    #[test]
    fn default_kind_config_publishes_postgres_on_loopback() {
        check(
            "",
            expect![[r#"
                kind: Cluster
                apiVersion: kind.x-k8s.io/v1alpha4
                name: e2e-migrations
                nodes:
                - role: control-plane
                  labels:
                    e2e-migrations/config-hash: b39465db622a5bc0
                    e2e-migrations/owner: xtask-e2e-setup
                  extraPortMappings:
                  - containerPort: 30432
                    hostPort: 15432
                    listenAddress: 127.0.0.1
                    protocol: TCP
                  - containerPort: 30433
                    hostPort: 15433
                    listenAddress: 127.0.0.1
                    protocol: TCP
                  - containerPort: 30434
                    hostPort: 15434
                    listenAddress: 127.0.0.1
                    protocol: TCP
                  - containerPort: 30435
                    hostPort: 15435
                    listenAddress: 127.0.0.1
                    protocol: TCP
                  - containerPort: 30436
                    hostPort: 15436
                    listenAddress: 127.0.0.1
                    protocol: TCP
                  - containerPort: 30437
                    hostPort: 15437
                    listenAddress: 127.0.0.1
                    protocol: TCP
                  - containerPort: 30438
                    hostPort: 15438
                    listenAddress: 127.0.0.1
                    protocol: TCP
                  - containerPort: 30439
                    hostPort: 15439
                    listenAddress: 127.0.0.1
                    protocol: TCP
            "#]],
        );
    }

    #[test]
    fn kind_config_with_image_service_ports_labels_and_patches() {
        check(
            r#"
            [cluster]
            name = "team-a"
            node_image = "kindest/node:v1.31.2"
            labels = { tier = "e2e" }
            kubeadm_config_patches = ["kind: InitConfiguration\nnodeRegistration:\n  kubeletExtraArgs:\n    max-pods: \"50\"\n"]
            [postgres]
            host_port = 25432
            [[port_mappings]]
            name = "datastorage"
            node_port = 30080
            host_port = 18080
            "#,
            expect![[r#"
                kind: Cluster
                apiVersion: kind.x-k8s.io/v1alpha4
                name: team-a
                nodes:
                - role: control-plane
                  image: kindest/node:v1.31.2
                  labels:
                    e2e-migrations/config-hash: 1c8bb73e76c2759d
                    e2e-migrations/owner: xtask-e2e-setup
                    tier: e2e
                  extraPortMappings:
                  - containerPort: 30432
                    hostPort: 25432
                    listenAddress: 127.0.0.1
                    protocol: TCP
                  - containerPort: 30433
                    hostPort: 25433
                    listenAddress: 127.0.0.1
                    protocol: TCP
                  - containerPort: 30434
                    hostPort: 25434
                    listenAddress: 127.0.0.1
                    protocol: TCP
                  - containerPort: 30435
                    hostPort: 25435
                    listenAddress: 127.0.0.1
                    protocol: TCP
                  - containerPort: 30436
                    hostPort: 25436
                    listenAddress: 127.0.0.1
                    protocol: TCP
                  - containerPort: 30437
                    hostPort: 25437
                    listenAddress: 127.0.0.1
                    protocol: TCP
                  - containerPort: 30438
                    hostPort: 25438
                    listenAddress: 127.0.0.1
                    protocol: TCP
                  - containerPort: 30439
                    hostPort: 25439
                    listenAddress: 127.0.0.1
                    protocol: TCP
                  - containerPort: 30080
                    hostPort: 18080
                    listenAddress: 127.0.0.1
                    protocol: TCP
                  kubeadmConfigPatches:
                  - |
                    kind: InitConfiguration
                    nodeRegistration:
                      kubeletExtraArgs:
                        max-pods: "50"
            "#]],
        );
    }

    #[test]
    fn a_changed_config_changes_the_hash() {
        let a = KindCluster::from_config(&E2eConfig::default());
        let mut changed = E2eConfig::default();
        changed.postgres.host_port = 15433;
        assert_ne!(a.hash(), KindCluster::from_config(&changed).hash());
        assert_eq!(a.hash(), KindCluster::from_config(&E2eConfig::default()).hash());
    }

    fn err(toml: &str) -> String {
        format!("{:#}", E2eConfig::parse(toml).unwrap_err())
    }

    #[test]
    fn invalid_settings_name_the_field() {
        assert!(err("[cluster]\nname = \"Team_A\"").contains("cluster.name \"Team_A\""));
        assert!(
            err("[postgres]\nnode_port = 8080").contains("postgres.node_port 8080: a NodePort must be in 30000-32767")
        );
        assert!(err("[postgres]\nimage_pull_policy = \"never\"").contains("postgres.image_pull_policy \"never\""));
        assert!(err("[[port_mappings]]\nname = \"svc\"\nnode_port = 30100\nhost_port = 15432")
            .contains("port_mappings \"svc\" host_port 15432 is also postgres.host_port"));
        assert!(err("[postgres]\nimgae = \"x\"").contains("unknown field `imgae`"));
    }

    #[test]
    fn pod_ids_are_non_root_numbers_or_left_to_the_platform() {
        let d = E2eConfig::default().postgres;
        assert_eq!((d.run_as_user.get(), d.run_as_group.get(), d.fs_group.get()), (Some(999), Some(999), Some(999)));
        let c = E2eConfig::parse("[postgres]\nrun_as_user = \"platform\"\nfs_group = 1000650000").unwrap();
        assert_eq!((c.postgres.run_as_user.get(), c.postgres.fs_group.get()), (None, Some(1_000_650_000)));
        assert!(err("[postgres]\nrun_as_user = 0")
            .starts_with("postgres.run_as_user 0 is root, which the restricted Pod Security Standard forbids"));
        assert!(
            err("[postgres]\nfs_group = -5").contains("postgres.fs_group -5: expected 1-2147483647 or \"platform\"")
        );
        assert!(err("[postgres]\nrun_as_group = \"auto\"")
            .contains("postgres.run_as_group \"auto\": expected a non-root id"));
    }

    #[test]
    fn resources_are_quantities_with_requests_within_limits() {
        let d = E2eConfig::default().postgres.resources;
        assert_eq!(d.limits.get("memory").map(String::as_str), Some("512Mi"));
        assert_eq!(d.requests.get("cpu").map(String::as_str), Some("100m"));
        let c = E2eConfig::parse("[postgres.resources]\nlimits = { memory = \"1Gi\", ephemeral-storage = \"2Gi\" }")
            .unwrap();
        assert_eq!(c.postgres.resources.limits.len(), 2);
        assert_eq!(c.postgres.resources.requests, d.requests, "the other half keeps its default");
        assert!(err("[postgres.resources]\nlimits = { memory = \"lots\" }")
            .contains("postgres.resources.limits.memory \"lots\": not a Kubernetes quantity"));
        assert!(err("[postgres.resources]\nrequests = { memory = \"1Gi\" }\nlimits = { memory = \"512Mi\" }")
            .contains("postgres.resources.requests.memory 1Gi is above limits.memory 512Mi"));
    }

    #[test]
    fn quantities_parse_as_kubernetes_writes_them() {
        let cases = [
            ("100m", 0.1),
            ("1", 1.0),
            ("1.5", 1.5),
            ("256Mi", 268_435_456.0),
            ("1Gi", 1_073_741_824.0),
            ("2G", 2e9),
            ("1e3", 1000.0),
            ("500k", 5e5),
        ];
        for (q, v) in cases {
            assert_eq!(parse_quantity(q), Some(v), "{q}");
        }
        for bad in ["", "Mi", "1.2.3", "one", "1 Gi", "-1", "1e3Mi", "."] {
            assert_eq!(parse_quantity(bad), None, "{bad}");
        }
    }

    #[test]
    fn existing_namespace_is_a_setting_too() {
        assert!(!E2eConfig::default().kube.existing_namespace);
        assert!(E2eConfig::parse("[kube]\nexisting_namespace = true").unwrap().kube.existing_namespace);
        assert!(err("[kube]\nexisting = true").contains("unknown field `existing`"));
    }

    #[test]
    fn a_missing_default_file_means_defaults_but_a_missing_explicit_file_is_an_error() {
        let nowhere = Path::new("/nonexistent/e2e.toml");
        let (config, path) = E2eConfig::load(None, nowhere).unwrap();
        assert_eq!((config, path), (E2eConfig::default(), None));
        let e = format!("{:#}", E2eConfig::load(Some(nowhere), nowhere).unwrap_err());
        assert!(e.starts_with("settings file /nonexistent/e2e.toml (--config or E2E_CONFIG): cannot read it"), "{e}");
    }
}
