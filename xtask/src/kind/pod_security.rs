//! The Pod Security Standard "restricted" (which includes "baseline") as a check over a rendered
//! pod template, written control by control from the Kubernetes documentation
//! (<https://kubernetes.io/docs/concepts/security/pod-security-standards/>, as of v1.34), so that
//! a change to the manifests cannot quietly drop a field the profile requires.
//!
//! The check reads the template as JSON, with the field paths the documentation names
//! (`spec.containers[*].securityContext.privileged`). It treats the pod as a Linux pod (the
//! manifests set no `spec.os.name`), so the Linux-only controls always apply. A field the check
//! does not know in `spec.volumes[*]` fails "Volume Types", so a new volume type fails closed.

use serde_json::Value;

/// A control the rendered pod does not meet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Violation {
    /// The control's name as the documentation writes it.
    pub(crate) control: &'static str,
    /// The field, with the container's index.
    pub(crate) field: String,
    /// The value found (`undefined` when it is missing).
    pub(crate) value: String,
}

/// Every control checked: the baseline's, then the restricted profile's own.
pub(crate) const CONTROLS: &[&str] = &[
    "HostProcess",
    "Host Namespaces",
    "Privileged Containers",
    "Capabilities (baseline)",
    "HostPath Volumes",
    "Host Ports",
    "Host Probes / Lifecycle Hooks",
    "AppArmor",
    "SELinux",
    "/proc Mount Type",
    "Seccomp (baseline)",
    "Sysctls",
    "Volume Types",
    "Privilege Escalation",
    "Running as Non-root",
    "Running as Non-root user",
    "Seccomp",
    "Capabilities",
];

/// Baseline: capabilities a container may add.
const BASELINE_CAPABILITIES: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// Baseline: the "safe" sysctls.
const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];

/// Baseline: SELinux types a pod may ask for.
const SELINUX_TYPES: &[&str] = &["", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"];

/// Restricted: the volume types allowed.
const VOLUME_TYPES: &[&str] =
    &["configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"];

fn get<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(*k)).filter(|v| !v.is_null())
}

fn show(v: Option<&Value>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "undefined".to_string())
}

/// The containers of every kind, with their field path prefix.
fn containers(spec: &Value) -> Vec<(String, &Value)> {
    let mut all = Vec::new();
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        for (i, c) in get(spec, &[list]).and_then(Value::as_array).into_iter().flatten().enumerate() {
            all.push((format!("spec.{list}[{i}]"), c));
        }
    }
    all
}

struct Check {
    violations: Vec<Violation>,
}

impl Check {
    /// Records a violation unless `ok` holds for the field's value.
    fn field(&mut self, control: &'static str, field: String, v: Option<&Value>, ok: impl Fn(Option<&Value>) -> bool) {
        if !ok(v) {
            self.violations.push(Violation { control, field, value: show(v) });
        }
    }
}

fn undefined_or_false(v: Option<&Value>) -> bool {
    v.is_none() || v == Some(&Value::Bool(false))
}

fn undefined_or_empty(v: Option<&Value>) -> bool {
    v.is_none() || v == Some(&Value::String(String::new()))
}

fn str_in(allowed: &'static [&'static str]) -> impl Fn(Option<&Value>) -> bool {
    move |v| v.is_none_or(|v| v.as_str().is_some_and(|s| allowed.contains(&s)))
}

/// Checks a pod template (`{"metadata": ..., "spec": ...}`) against "restricted" (pure).
pub(crate) fn restricted(template: &Value) -> Vec<Violation> {
    let mut c = Check { violations: Vec::new() };
    let spec = get(template, &["spec"]).cloned().unwrap_or(Value::Null);
    let psc = get(&spec, &["securityContext"]).cloned().unwrap_or(Value::Null);
    let ctrs = containers(&spec);
    let sc = |ctr: &Value, path: &[&str]| -> Option<Value> {
        let mut full = vec!["securityContext"];
        full.extend_from_slice(path);
        get(ctr, &full).cloned()
    };

    // ---- baseline ----
    // HostProcess
    let f = "spec.securityContext.windowsOptions.hostProcess";
    c.field("HostProcess", f.into(), get(&psc, &["windowsOptions", "hostProcess"]), undefined_or_false);
    for (p, ctr) in &ctrs {
        let v = sc(ctr, &["windowsOptions", "hostProcess"]);
        c.field(
            "HostProcess",
            format!("{p}.securityContext.windowsOptions.hostProcess"),
            v.as_ref(),
            undefined_or_false,
        );
    }
    // Host Namespaces
    for k in ["hostNetwork", "hostPID", "hostIPC"] {
        c.field("Host Namespaces", format!("spec.{k}"), get(&spec, &[k]), undefined_or_false);
    }
    // Privileged Containers
    for (p, ctr) in &ctrs {
        let v = sc(ctr, &["privileged"]);
        c.field("Privileged Containers", format!("{p}.securityContext.privileged"), v.as_ref(), undefined_or_false);
    }
    // Capabilities (baseline): only the listed ones may be added
    for (p, ctr) in &ctrs {
        for (i, cap) in
            sc(ctr, &["capabilities", "add"]).and_then(|v| v.as_array().cloned()).unwrap_or_default().iter().enumerate()
        {
            let f = format!("{p}.securityContext.capabilities.add[{i}]");
            c.field("Capabilities (baseline)", f, Some(cap), str_in(BASELINE_CAPABILITIES));
        }
    }
    // HostPath Volumes
    for (i, vol) in get(&spec, &["volumes"]).and_then(Value::as_array).into_iter().flatten().enumerate() {
        c.field("HostPath Volumes", format!("spec.volumes[{i}].hostPath"), get(vol, &["hostPath"]), |v| v.is_none());
    }
    // Host Ports
    for (p, ctr) in &ctrs {
        for (i, port) in get(ctr, &["ports"]).and_then(Value::as_array).into_iter().flatten().enumerate() {
            c.field("Host Ports", format!("{p}.ports[{i}].hostPort"), get(port, &["hostPort"]), |v| {
                v.is_none_or(|v| v.as_i64() == Some(0))
            });
        }
    }
    // Host Probes / Lifecycle Hooks
    for (p, ctr) in &ctrs {
        let handlers = [
            ["livenessProbe", ""],
            ["readinessProbe", ""],
            ["startupProbe", ""],
            ["lifecycle", "postStart"],
            ["lifecycle", "preStop"],
        ];
        for [a, b] in handlers {
            for kind in ["httpGet", "tcpSocket"] {
                let path: Vec<&str> = [a, b, kind, "host"].into_iter().filter(|s| !s.is_empty()).collect();
                let f = format!("{p}.{}", path.join("."));
                c.field("Host Probes / Lifecycle Hooks", f, get(ctr, &path), undefined_or_empty);
            }
        }
    }
    // AppArmor: the field, and the older annotations
    let apparmor = str_in(&["RuntimeDefault", "Localhost"]);
    let f = "spec.securityContext.appArmorProfile.type";
    c.field("AppArmor", f.into(), get(&psc, &["appArmorProfile", "type"]), &apparmor);
    for (p, ctr) in &ctrs {
        let v = sc(ctr, &["appArmorProfile", "type"]);
        c.field("AppArmor", format!("{p}.securityContext.appArmorProfile.type"), v.as_ref(), &apparmor);
    }
    let annotations =
        get(template, &["metadata", "annotations"]).and_then(Value::as_object).cloned().unwrap_or_default();
    for (k, v) in annotations.iter().filter(|(k, _)| k.starts_with("container.apparmor.security.beta.kubernetes.io/")) {
        c.field("AppArmor", format!("metadata.annotations[{k:?}]"), Some(v), |v| {
            v.and_then(Value::as_str).is_some_and(|s| s == "runtime/default" || s.starts_with("localhost/"))
        });
    }
    // SELinux: the type from a short list; no user or role
    let mut selinux = vec![("spec.securityContext".to_string(), get(&psc, &["seLinuxOptions"]).cloned())];
    selinux.extend(ctrs.iter().map(|(p, ctr)| (format!("{p}.securityContext"), sc(ctr, &["seLinuxOptions"]))));
    for (p, opts) in &selinux {
        let opts = opts.clone().unwrap_or(Value::Null);
        c.field("SELinux", format!("{p}.seLinuxOptions.type"), get(&opts, &["type"]), str_in(SELINUX_TYPES));
        for k in ["user", "role"] {
            c.field("SELinux", format!("{p}.seLinuxOptions.{k}"), get(&opts, &[k]), undefined_or_empty);
        }
    }
    // /proc Mount Type
    for (p, ctr) in &ctrs {
        let v = sc(ctr, &["procMount"]);
        c.field("/proc Mount Type", format!("{p}.securityContext.procMount"), v.as_ref(), str_in(&["Default"]));
    }
    // Seccomp (baseline): never Unconfined
    let not_unconfined = |v: Option<&Value>| v.and_then(Value::as_str) != Some("Unconfined");
    let f = "spec.securityContext.seccompProfile.type";
    c.field("Seccomp (baseline)", f.into(), get(&psc, &["seccompProfile", "type"]), not_unconfined);
    for (p, ctr) in &ctrs {
        let v = sc(ctr, &["seccompProfile", "type"]);
        c.field("Seccomp (baseline)", format!("{p}.securityContext.seccompProfile.type"), v.as_ref(), not_unconfined);
    }
    // Sysctls
    for (i, s) in get(&psc, &["sysctls"]).and_then(Value::as_array).into_iter().flatten().enumerate() {
        let f = format!("spec.securityContext.sysctls[{i}].name");
        c.field("Sysctls", f, get(s, &["name"]), |v| {
            v.and_then(Value::as_str).is_some_and(|n| SAFE_SYSCTLS.contains(&n))
        });
    }

    // ---- restricted ----
    // Volume Types: each volume sets one allowed type and nothing else
    for (i, vol) in get(&spec, &["volumes"]).and_then(Value::as_array).into_iter().flatten().enumerate() {
        let types: Vec<&String> =
            vol.as_object().map(|o| o.keys().filter(|k| *k != "name").collect()).unwrap_or_default();
        let ok = types.len() == 1 && types.iter().all(|t| VOLUME_TYPES.contains(&t.as_str()));
        if !ok {
            let value = types.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(", ");
            c.violations.push(Violation { control: "Volume Types", field: format!("spec.volumes[{i}]"), value });
        }
    }
    // Privilege Escalation: explicitly false
    for (p, ctr) in &ctrs {
        let v = sc(ctr, &["allowPrivilegeEscalation"]);
        let f = format!("{p}.securityContext.allowPrivilegeEscalation");
        c.field("Privilege Escalation", f, v.as_ref(), |v| v == Some(&Value::Bool(false)));
    }
    // Running as Non-root: true at the pod level (containers may then leave it out), else true in
    // every container; never false anywhere
    let pod_nonroot = get(&psc, &["runAsNonRoot"]).cloned();
    let is_true = |v: Option<&Value>| v == Some(&Value::Bool(true));
    if pod_nonroot.is_some() {
        c.field("Running as Non-root", "spec.securityContext.runAsNonRoot".into(), pod_nonroot.as_ref(), is_true);
    }
    for (p, ctr) in &ctrs {
        let v = sc(ctr, &["runAsNonRoot"]);
        let f = format!("{p}.securityContext.runAsNonRoot");
        let pod_says = is_true(pod_nonroot.as_ref());
        c.field("Running as Non-root", f, v.as_ref(), |v| is_true(v) || (v.is_none() && pod_says));
    }
    // Running as Non-root user: runAsUser is never 0
    let not_zero = |v: Option<&Value>| v.is_none_or(|v| v.as_i64() != Some(0));
    c.field("Running as Non-root user", "spec.securityContext.runAsUser".into(), get(&psc, &["runAsUser"]), not_zero);
    for (p, ctr) in &ctrs {
        let v = sc(ctr, &["runAsUser"]);
        c.field("Running as Non-root user", format!("{p}.securityContext.runAsUser"), v.as_ref(), not_zero);
    }
    // Seccomp: RuntimeDefault or Localhost at the pod level (containers may then leave it
    // out), else in every container
    let profile = str_in(&["RuntimeDefault", "Localhost"]);
    let pod_profile = get(&psc, &["seccompProfile", "type"]).cloned();
    c.field("Seccomp", "spec.securityContext.seccompProfile.type".into(), pod_profile.as_ref(), &profile);
    for (p, ctr) in &ctrs {
        let v = sc(ctr, &["seccompProfile", "type"]);
        let f = format!("{p}.securityContext.seccompProfile.type");
        let pod_set = pod_profile.is_some();
        c.field("Seccomp", f, v.as_ref(), |v| if v.is_none() { pod_set } else { profile(v) });
    }
    // Capabilities: drop ALL, add back at most NET_BIND_SERVICE
    for (p, ctr) in &ctrs {
        let drop = sc(ctr, &["capabilities", "drop"]);
        let f = format!("{p}.securityContext.capabilities.drop");
        c.field("Capabilities", f, drop.as_ref(), |v| {
            v.and_then(Value::as_array).is_some_and(|l| l.iter().any(|x| x.as_str() == Some("ALL")))
        });
        for (i, cap) in
            sc(ctr, &["capabilities", "add"]).and_then(|v| v.as_array().cloned()).unwrap_or_default().iter().enumerate()
        {
            let f = format!("{p}.securityContext.capabilities.add[{i}]");
            c.field("Capabilities", f, Some(cap), str_in(&["NET_BIND_SERVICE"]));
        }
    }
    c.violations
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kind::config::E2eConfig;
    use crate::kind::manifests::{Exposure, Manifests, RunMeta};
    use chrono::{DateTime, Utc};
    use serde_json::json;

    fn run() -> RunMeta {
        let t = DateTime::parse_from_rfc3339("2024-06-15T12:00:00Z").unwrap().with_timezone(&Utc);
        RunMeta { run_id: "3f9a1c2b".into(), created_at: t, renewed_at: t, created_by: "ci".into() }
    }

    fn template(toml: &str, exposure: Exposure) -> Value {
        let config = E2eConfig::parse(toml).unwrap();
        let m = Manifests::new(&config.postgres, "team-a", "pw", exposure, &run(), false);
        serde_json::to_value(&m.deployment.spec.template).unwrap()
    }

    #[test]
    fn the_rendered_pod_meets_the_restricted_profile_in_every_configuration() {
        let configs = [
            ("defaults (uid 999)", ""),
            (
                "an arbitrary uid",
                "[postgres]\nrun_as_user = 1000650000\nrun_as_group = 1000650000\nfs_group = 1000650000",
            ),
            (
                "ids from the platform",
                "[postgres]\nrun_as_user = \"platform\"\nrun_as_group = \"platform\"\nfs_group = \"platform\"",
            ),
        ];
        for (what, toml) in configs {
            for exposure in [Exposure::ClusterIp, Exposure::NodePort(30432)] {
                let v = restricted(&template(toml, exposure));
                assert_eq!(v, [], "{what}, {exposure:?}");
            }
        }
    }

    #[test]
    fn the_rendered_pod_sets_the_fields_the_issue_asks_for() {
        let t = template("", Exposure::ClusterIp);
        let psc = &t["spec"]["securityContext"];
        assert_eq!(psc["runAsNonRoot"], json!(true));
        assert_eq!(
            (psc["runAsUser"].clone(), psc["runAsGroup"].clone(), psc["fsGroup"].clone()),
            (json!(999), json!(999), json!(999))
        );
        assert_eq!(psc["seccompProfile"]["type"], json!("RuntimeDefault"));
        let sc = &t["spec"]["containers"][0]["securityContext"];
        assert_eq!(sc["allowPrivilegeEscalation"], json!(false));
        assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
        let res = &t["spec"]["containers"][0]["resources"];
        assert!(res["limits"]["memory"].is_string() && res["requests"]["memory"].is_string(), "{res}");
        let platform = template(
            "[postgres]\nrun_as_user = \"platform\"\nrun_as_group = \"platform\"\nfs_group = \"platform\"",
            Exposure::ClusterIp,
        );
        let psc = platform["spec"]["securityContext"].as_object().unwrap();
        assert!(
            !psc.contains_key("runAsUser") && !psc.contains_key("runAsGroup") && !psc.contains_key("fsGroup"),
            "{psc:?}"
        );
    }

    /// A change to a rendered template.
    type Breaker = fn(&mut Value);

    /// One mutation per control, each breaking that control alone.
    fn breakers() -> Vec<(&'static str, Breaker)> {
        vec![
            ("HostProcess", |t| t["spec"]["securityContext"]["windowsOptions"] = json!({"hostProcess": true})),
            ("Host Namespaces", |t| t["spec"]["hostPID"] = json!(true)),
            ("Privileged Containers", |t| t["spec"]["containers"][0]["securityContext"]["privileged"] = json!(true)),
            ("Capabilities (baseline)", |t| {
                t["spec"]["containers"][0]["securityContext"]["capabilities"]["add"] = json!(["SYS_ADMIN"])
            }),
            ("HostPath Volumes", |t| t["spec"]["volumes"][0] = json!({"name": "data", "hostPath": {"path": "/"}})),
            ("Host Ports", |t| t["spec"]["containers"][0]["ports"][0]["hostPort"] = json!(5432)),
            ("Host Probes / Lifecycle Hooks", |t| {
                t["spec"]["containers"][0]["livenessProbe"] = json!({"tcpSocket": {"host": "10.0.0.1", "port": 5432}})
            }),
            ("AppArmor", |t| {
                t["metadata"]["annotations"]["container.apparmor.security.beta.kubernetes.io/postgres"] =
                    json!("unconfined")
            }),
            ("SELinux", |t| t["spec"]["securityContext"]["seLinuxOptions"] = json!({"user": "system_u"})),
            ("/proc Mount Type", |t| t["spec"]["containers"][0]["securityContext"]["procMount"] = json!("Unmasked")),
            ("Sysctls", |t| t["spec"]["securityContext"]["sysctls"] = json!([{"name": "kernel.msgmax", "value": "1"}])),
            ("Volume Types", |t| {
                t["spec"]["volumes"][0] = json!({"name": "data", "nfs": {"server": "x", "path": "/"}})
            }),
            ("Privilege Escalation", |t| {
                t["spec"]["containers"][0]["securityContext"]
                    .as_object_mut()
                    .unwrap()
                    .remove("allowPrivilegeEscalation");
            }),
            ("Running as Non-root", |t| {
                t["spec"]["securityContext"].as_object_mut().unwrap().remove("runAsNonRoot");
                t["spec"]["containers"][0]["securityContext"].as_object_mut().unwrap().remove("runAsNonRoot");
            }),
            ("Running as Non-root user", |t| t["spec"]["containers"][0]["securityContext"]["runAsUser"] = json!(0)),
            ("Seccomp", |t| {
                t["spec"]["securityContext"].as_object_mut().unwrap().remove("seccompProfile");
                t["spec"]["containers"][0]["securityContext"].as_object_mut().unwrap().remove("seccompProfile");
            }),
            ("Capabilities", |t| {
                t["spec"]["containers"][0]["securityContext"]["capabilities"]["drop"] = json!(["NET_RAW"])
            }),
        ]
    }

    #[test]
    fn each_control_catches_its_own_violation() {
        let good = template("", Exposure::ClusterIp);
        let mut covered: Vec<&str> = Vec::new();
        for (control, breaks) in breakers() {
            let mut t = good.clone();
            breaks(&mut t);
            let found: Vec<&str> = restricted(&t).iter().map(|v| v.control).collect();
            assert!(found.contains(&control), "{control}: found {found:?}");
            covered.push(control);
        }
        // Seccomp (baseline) and Seccomp share their fields: Unconfined breaks both
        let mut t = good.clone();
        t["spec"]["securityContext"]["seccompProfile"]["type"] = json!("Unconfined");
        let found: Vec<&str> = restricted(&t).iter().map(|v| v.control).collect();
        assert!(found.contains(&"Seccomp (baseline)") && found.contains(&"Seccomp"), "{found:?}");
        covered.push("Seccomp (baseline)");
        covered.sort();
        let mut all = CONTROLS.to_vec();
        all.sort();
        assert_eq!(covered, all, "every control has a test that breaks it");
    }

    #[test]
    fn a_violation_names_the_field_and_value() {
        let mut t = template("", Exposure::ClusterIp);
        t["spec"]["initContainers"] = json!([{"name": "init", "securityContext": {"privileged": true}}]);
        let v = restricted(&t);
        assert!(
            v.contains(&Violation {
                control: "Privileged Containers",
                field: "spec.initContainers[0].securityContext.privileged".into(),
                value: "true".into()
            }),
            "{v:?}"
        );
        assert!(
            v.iter().any(|v| v.control == "Capabilities"
                && v.field == "spec.initContainers[0].securityContext.capabilities.drop"
                && v.value == "undefined"),
            "{v:?}"
        );
    }
}
