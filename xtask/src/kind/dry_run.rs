//! The ordered plan of commands and manifests (pure): what `--dry-run` prints, and the argument
//! lists that the real run passes to `kind` and the container engine.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use e2e_migrations::lifecycle::record::{env_file, record_file};

use super::lock::LockPaths;

/// The container engine kind runs its nodes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Engine {
    /// Docker.
    Docker,
    /// Podman (kind with `KIND_EXPERIMENTAL_PROVIDER=podman`).
    Podman,
}

impl Engine {
    /// The engine's command.
    pub(crate) fn program(self) -> &'static str {
        match self {
            Engine::Docker => "docker",
            Engine::Podman => "podman",
        }
    }
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PlanStep {
    /// A command; `when` says under which condition it runs.
    Run { argv: Vec<String>, when: Option<String> },
    /// A file written with mode 0600.
    Write { path: String, text: String },
    /// Objects applied server-side.
    Apply { target: String, yaml: String },
    /// Anything else the run does (waits, connections, migrations, API deletes).
    Do(String),
}

/// `kind create cluster` with our config and our own kubeconfig file (the user's stays
/// untouched); `--retain` keeps a failed cluster so its logs can be exported.
pub(crate) fn kind_create_args(name: &str, config: &Path, kubeconfig: &Path) -> Vec<String> {
    let mut a = strings(&["create", "cluster", "--name", name, "--config"]);
    a.push(config.display().to_string());
    a.push("--kubeconfig".to_string());
    a.push(kubeconfig.display().to_string());
    a.extend(strings(&["--wait", "120s", "--retain"]));
    a
}

/// `kind delete cluster`, with our kubeconfig file (so the user's is not edited).
pub(crate) fn kind_delete_args(name: &str, kubeconfig: &Path) -> Vec<String> {
    let mut a = strings(&["delete", "cluster", "--name", name, "--kubeconfig"]);
    a.push(kubeconfig.display().to_string());
    a
}

/// `kind get kubeconfig` (printed on stdout, which we write to our own file).
pub(crate) fn kind_get_kubeconfig_args(name: &str) -> Vec<String> {
    strings(&["get", "kubeconfig", "--name", name])
}

/// Loading a local image into the node: `kind load docker-image` for Docker; for Podman, the
/// image saved to `archive` first, then `kind load image-archive`.
pub(crate) fn image_load_commands(engine: Engine, image: &str, cluster: &str, archive: &Path) -> Vec<Vec<String>> {
    match engine {
        Engine::Docker => vec![strings(&["kind", "load", "docker-image", image, "--name", cluster])],
        Engine::Podman => {
            let archive = archive.display().to_string();
            vec![
                strings(&["podman", "save", "--output", &archive, image]),
                strings(&["kind", "load", "image-archive", &archive, "--name", cluster]),
            ]
        }
    }
}

/// Where `kind export logs` writes, in the kind folder of the state folder: `logs-<stamp>`.
pub(crate) fn logs_dir(kind_dir: &Path, stamp: &str) -> PathBuf {
    kind_dir.join(format!("logs-{stamp}"))
}

/// `kind export logs` into `dir`.
pub(crate) fn kind_export_logs_args(name: &str, dir: &Path) -> Vec<String> {
    let mut a = strings(&["export", "logs"]);
    a.push(dir.display().to_string());
    a.extend(strings(&["--name", name]));
    a
}

fn strings(s: &[&str]) -> Vec<String> {
    s.iter().map(|s| s.to_string()).collect()
}

fn kind(args: Vec<String>) -> Vec<String> {
    std::iter::once("kind".to_string()).chain(args).collect()
}

/// What a Kind setup plan needs.
#[derive(Debug, Clone)]
pub(crate) struct KindSetup<'a> {
    /// Cluster name.
    pub(crate) cluster: &'a str,
    /// Where the kind config goes.
    pub(crate) config_path: &'a Path,
    /// The kind config YAML.
    pub(crate) config_yaml: &'a str,
    /// Our kubeconfig file.
    pub(crate) kubeconfig: &'a Path,
    /// The engine (for loading the image).
    pub(crate) engine: Engine,
    /// The PostgreSQL image.
    pub(crate) image: &'a str,
    /// Where a Podman image archive goes.
    pub(crate) archive: &'a Path,
    /// The kind folder of the state folder (the logs of a failed setup go there).
    pub(crate) kind_dir: &'a Path,
    /// The cluster's machine-wide lock and the note of an interrupted create.
    pub(crate) lock: &'a LockPaths,
}

/// What both setups share after the cluster exists.
#[derive(Debug, Clone)]
pub(crate) struct DeployPlan<'a> {
    /// Manifests as YAML (password redacted).
    pub(crate) manifests_yaml: &'a str,
    /// Where they go (e.g. `context kind-e2e-migrations, namespace e2e`).
    pub(crate) target: String,
    /// The namespace.
    pub(crate) namespace: &'a str,
    /// Whose namespace it is.
    pub(crate) mode: super::deploy::NamespaceMode,
    /// The run id (or a placeholder when setup has not recorded one yet).
    pub(crate) run_id: &'a str,
    /// Readiness timeout.
    pub(crate) timeout_s: u64,
    /// How the host connects.
    pub(crate) connect: String,
    /// The sets (`all` when none).
    pub(crate) sets: String,
    /// The state folder (the record and the env file go there).
    pub(crate) state_dir: &'a Path,
}

/// The plan of a Kind setup.
pub(crate) fn kind_setup(k: &KindSetup<'_>, d: &DeployPlan<'_>) -> Vec<PlanStep> {
    let name = k.cluster;
    let mut steps = vec![
        lock_step(k.lock, name, "until this checkout's namespace exists (its claim on the cluster)"),
        PlanStep::Run { argv: kind(strings(&["get", "clusters"])), when: None },
        PlanStep::Run {
            argv: kind(kind_get_kubeconfig_args(name)),
            when: Some(format!("when the cluster exists: written to {} (0600)", k.kubeconfig.display())),
        },
        PlanStep::Write { path: k.config_path.display().to_string(), text: k.config_yaml.to_string() },
        PlanStep::Do(format!(
            "ask the cluster's API (at most 10 s) whether its node carries {}={} (created by e2e-setup), and list the \
             namespaces of the checkouts using it (label {}); a cluster whose API does not answer is neither reused \
             nor recreated: setup stops, changes nothing and says what to do",
            super::config::OWNER_LABEL,
            super::config::OWNER_VALUE,
            super::share::CHECKOUT_LABEL
        )),
        record_step(d.state_dir, d.run_id),
        PlanStep::Do(format!(
            "before a delete or create below: write {}, removed once the cluster is made (a later setup that finds it \
             redoes the interrupted create)",
            k.lock.creating.display()
        )),
        PlanStep::Run {
            argv: kind(kind_delete_args(name, k.kubeconfig)),
            when: Some(format!(
                "with --recreate, or when the cluster is not Ready or its config changed, and only when its API \
                 answers, shows the label and shows no other checkout's namespace (else setup stops, naming them); or \
                 when {} says an earlier create or delete was interrupted",
                k.lock.creating.display()
            )),
        },
        PlanStep::Run {
            argv: kind(kind_create_args(name, k.config_path, k.kubeconfig)),
            when: Some(format!(
                "unless a healthy cluster {name:?} that e2e-setup created exists (a same-named cluster it did not \
                 create is refused)"
            )),
        },
    ];
    let loads = image_load_commands(k.engine, k.image, name, k.archive);
    steps.push(PlanStep::Run {
        argv: strings(&[k.engine.program(), "image", "inspect", "--format", "{{.Id}}", k.image]),
        when: Some("is the image present in the local engine?".to_string()),
    });
    for argv in loads {
        steps.push(PlanStep::Run {
            argv,
            when: Some("when the image is present locally and not loaded into this cluster yet".to_string()),
        });
    }
    for step in deploy(d) {
        let applied = matches!(step, PlanStep::Apply { .. });
        steps.push(step);
        if applied {
            steps.push(PlanStep::Do(format!("release the lock {}", k.lock.lock.display())));
        }
    }
    steps.push(PlanStep::Run {
        argv: kind(kind_export_logs_args(name, &logs_dir(k.kind_dir, "<time>"))),
        when: Some("only if a step above fails; the path is printed".to_string()),
    });
    steps
}

/// The step that takes the cluster's machine-wide lock, held `until`.
fn lock_step(lock: &LockPaths, cluster: &str, until: &str) -> PlanStep {
    PlanStep::Do(format!(
        "take the lock {} (flock; waits while a setup or teardown of another checkout works on cluster {cluster:?}), \
         held {until}",
        lock.lock.display()
    ))
}

/// The step that saves the record before the cluster is changed.
fn record_step(state_dir: &Path, run_id: &str) -> PlanStep {
    PlanStep::Do(format!(
        "write {} (0600) with run {run_id}, phase creating, before anything is made on the cluster: teardown \
         finds what setup made even if it fails or is killed",
        record_file(state_dir).display()
    ))
}

/// The step that removes the record and the env file after a teardown.
fn forget_step(state_dir: &Path) -> PlanStep {
    PlanStep::Do(format!("remove {} and {}", record_file(state_dir).display(), env_file(state_dir).display()))
}

/// The plan of a setup in an existing cluster.
pub(crate) fn kube_setup(d: &DeployPlan<'_>) -> Vec<PlanStep> {
    let mut steps = vec![record_step(d.state_dir, d.run_id)];
    steps.extend(deploy(d));
    steps
}

fn deploy(d: &DeployPlan<'_>) -> Vec<PlanStep> {
    use super::deploy::NamespaceMode;
    let ns = d.namespace;
    let labelled = format!("{}={}", e2e_migrations::kube::MANAGED_BY_LABEL, e2e_migrations::kube::MANAGED_BY);
    let namespace_step = match d.mode {
        NamespaceMode::Create => format!(
            "check namespace {ns}: create it; reuse it when labelled {labelled} for run {}; refuse it otherwise",
            d.run_id
        ),
        NamespaceMode::Existing => format!(
            "namespace {ns} was made by someone else (--existing-namespace): not read, created or deleted; \
             setup owns only the objects below, labelled {}={}",
            e2e_migrations::kube::RUN_ID_LABEL,
            d.run_id
        ),
        NamespaceMode::Kind => format!(
            "check namespace {ns} (this checkout's, labelled {}=<this checkout> and its port slot, the lowest free): \
             create it, or reuse it and remove what earlier runs (whose state is gone) left there; another \
             checkout's is refused",
            super::share::CHECKOUT_LABEL
        ),
    };
    vec![
        PlanStep::Do(namespace_step),
        PlanStep::Do(format!(
            "read secret {} in namespace {ns}: keep its password if it exists, else generate one",
            e2e_migrations::kube::secret_name(d.run_id)
        )),
        PlanStep::Apply { target: d.target.clone(), yaml: d.manifests_yaml.to_string() },
        PlanStep::Do(format!(
            "wait (watch) until deployment {} is rolled out and its pod is Ready, at most {} s",
            e2e_migrations::kube::instance_name(d.run_id),
            d.timeout_s
        )),
        PlanStep::Do(format!("connect: {}", d.connect)),
        PlanStep::Do(format!("apply migration sets {} and roll their partitions", d.sets)),
        PlanStep::Do(format!(
            "write {} (phase ready, the sets) and {} (0600)",
            record_file(d.state_dir).display(),
            env_file(d.state_dir).display()
        )),
    ]
}

/// What a Kind teardown plan needs.
#[derive(Debug, Clone)]
pub(crate) struct KindTeardown<'a> {
    /// Cluster name.
    pub(crate) cluster: &'a str,
    /// This checkout's namespace.
    pub(crate) namespace: &'a str,
    /// Our kubeconfig file.
    pub(crate) kubeconfig: &'a Path,
    /// The cluster's machine-wide lock and the note of an interrupted create.
    pub(crate) lock: &'a LockPaths,
    /// The state folder (the record and the env file are removed there).
    pub(crate) state_dir: &'a Path,
}

/// The plan of a Kind teardown.
pub(crate) fn kind_teardown(t: &KindTeardown<'_>) -> Vec<PlanStep> {
    let (name, namespace) = (t.cluster, t.namespace);
    vec![
        lock_step(t.lock, name, "until the cluster is deleted or kept"),
        PlanStep::Run { argv: kind(strings(&["get", "clusters"])), when: None },
        PlanStep::Run {
            argv: kind(kind_get_kubeconfig_args(name)),
            when: Some(format!("when the cluster exists: written to {} (0600)", t.kubeconfig.display())),
        },
        PlanStep::Do(format!(
            "ask the cluster's API (at most 10 s) whether its node carries {} (created by e2e-setup), and list the \
             namespaces of the checkouts using it (label {}); a cluster whose API does not answer, or that e2e-setup \
             did not create, is left alone: teardown stops, deletes nothing, keeps this checkout's record and says \
             what to do",
            super::config::OWNER_LABEL,
            super::share::CHECKOUT_LABEL
        )),
        PlanStep::Do(format!(
            "delete this checkout's namespace {namespace} (labelled {}=<this checkout>)",
            super::share::CHECKOUT_LABEL
        )),
        PlanStep::Run {
            argv: kind(kind_delete_args(name, t.kubeconfig)),
            when: Some(format!(
                "when no other checkout's namespace remains, whichever checkout created the cluster (the last one out \
                 deletes it); or when {} says an earlier create or delete was interrupted. That note is written \
                 before the delete and removed once the cluster is gone, so a delete killed half way is finished by \
                 the next teardown",
                t.lock.creating.display()
            )),
        },
        forget_step(t.state_dir),
    ]
}

/// The plan of a teardown in an existing cluster: the namespace setup created, or only the
/// run's objects in a namespace someone else made.
pub(crate) fn kube_teardown(
    target: &str,
    namespace: &str,
    run_id: Option<&str>,
    existing: bool,
    state_dir: &Path,
) -> Vec<PlanStep> {
    let labelled = format!("{}={}", e2e_migrations::kube::MANAGED_BY_LABEL, e2e_migrations::kube::MANAGED_BY);
    let first = if existing {
        format!(
            "{target}: delete the deployment, service and secret labelled {labelled},{}={} in namespace {namespace} \
             (never the namespace, never an object without the labels), and wait until its pod is gone",
            e2e_migrations::kube::RUN_ID_LABEL,
            run_id.unwrap_or("<--run-id>")
        )
    } else {
        let run = run_id.map(|r| format!(" for run {r}")).unwrap_or_default();
        format!(
            "{target}: delete namespace {namespace} when it is labelled {labelled}{run} (nothing else), and wait until it is gone"
        )
    };
    vec![PlanStep::Do(first), forget_step(state_dir)]
}

/// A command line as a reader would type it (arguments quoted when needed).
pub(crate) fn shell_words(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if !a.is_empty() && a.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./=:,@+".contains(&b)) {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The plan as text: numbered steps, commands as command lines, manifests as YAML.
pub(crate) fn render(steps: &[PlanStep]) -> String {
    let mut out = String::new();
    for (i, step) in steps.iter().enumerate() {
        let n = i + 1;
        match step {
            PlanStep::Run { argv, when: None } => writeln!(out, "# {n}.\n{}", shell_words(argv)),
            PlanStep::Run { argv, when: Some(w) } => writeln!(out, "# {n}. {w}\n{}", shell_words(argv)),
            PlanStep::Write { path, text } => {
                writeln!(out, "# {n}. write {path} (mode 0600)\n{}", text.trim_end())
            }
            PlanStep::Apply { target, yaml } => {
                writeln!(
                    out,
                    "# {n}. server-side apply (field manager e2e-migrations) to {target}\n{}",
                    yaml.trim_end()
                )
            }
            PlanStep::Do(what) => writeln!(out, "# {n}. {what}"),
        }
        .expect("writing to a String");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::expect;

    fn deploy_input() -> DeployPlan<'static> {
        DeployPlan {
            manifests_yaml: "apiVersion: v1\nkind: Namespace\n",
            target: "context kind-e2e, namespace e2e".to_string(),
            namespace: "e2e",
            mode: super::super::deploy::NamespaceMode::Kind,
            run_id: "3f9a1c2b",
            timeout_s: 180,
            connect: "postgres://e2e:***@127.0.0.1:15432/e2e".to_string(),
            sets: "audit,workflow".to_string(),
            state_dir: Path::new("/w/state"),
        }
    }

    #[test]
    fn kind_setup_plan() {
        let k = KindSetup {
            cluster: "e2e",
            config_path: Path::new("/w/state/kind/e2e.config.yaml"),
            config_yaml: "kind: Cluster\n",
            kubeconfig: Path::new("/w/state/kind/kubeconfig"),
            engine: Engine::Docker,
            image: "postgres:16.6-bookworm",
            archive: Path::new("/w/state/kind/image.tar"),
            kind_dir: Path::new("/w/state/kind"),
            lock: &LockPaths::new(Path::new("/home/u/.cache/e2e-migrations"), "e2e"),
        };
        expect![[r##"
            # 1. take the lock /home/u/.cache/e2e-migrations/kind-e2e.lock (flock; waits while a setup or teardown of another checkout works on cluster "e2e"), held until this checkout's namespace exists (its claim on the cluster)
            # 2.
            kind get clusters
            # 3. when the cluster exists: written to /w/state/kind/kubeconfig (0600)
            kind get kubeconfig --name e2e
            # 4. write /w/state/kind/e2e.config.yaml (mode 0600)
            kind: Cluster
            # 5. ask the cluster's API (at most 10 s) whether its node carries e2e-migrations/owner=xtask-e2e-setup (created by e2e-setup), and list the namespaces of the checkouts using it (label e2e-migrations/checkout); a cluster whose API does not answer is neither reused nor recreated: setup stops, changes nothing and says what to do
            # 6. write /w/state/state.json (0600) with run 3f9a1c2b, phase creating, before anything is made on the cluster: teardown finds what setup made even if it fails or is killed
            # 7. before a delete or create below: write /home/u/.cache/e2e-migrations/kind-e2e.creating, removed once the cluster is made (a later setup that finds it redoes the interrupted create)
            # 8. with --recreate, or when the cluster is not Ready or its config changed, and only when its API answers, shows the label and shows no other checkout's namespace (else setup stops, naming them); or when /home/u/.cache/e2e-migrations/kind-e2e.creating says an earlier create or delete was interrupted
            kind delete cluster --name e2e --kubeconfig /w/state/kind/kubeconfig
            # 9. unless a healthy cluster "e2e" that e2e-setup created exists (a same-named cluster it did not create is refused)
            kind create cluster --name e2e --config /w/state/kind/e2e.config.yaml --kubeconfig /w/state/kind/kubeconfig --wait 120s --retain
            # 10. is the image present in the local engine?
            docker image inspect --format '{{.Id}}' postgres:16.6-bookworm
            # 11. when the image is present locally and not loaded into this cluster yet
            kind load docker-image postgres:16.6-bookworm --name e2e
            # 12. check namespace e2e (this checkout's, labelled e2e-migrations/checkout=<this checkout> and its port slot, the lowest free): create it, or reuse it and remove what earlier runs (whose state is gone) left there; another checkout's is refused
            # 13. read secret postgres-3f9a1c2b-credentials in namespace e2e: keep its password if it exists, else generate one
            # 14. server-side apply (field manager e2e-migrations) to context kind-e2e, namespace e2e
            apiVersion: v1
            kind: Namespace
            # 15. release the lock /home/u/.cache/e2e-migrations/kind-e2e.lock
            # 16. wait (watch) until deployment postgres-3f9a1c2b is rolled out and its pod is Ready, at most 180 s
            # 17. connect: postgres://e2e:***@127.0.0.1:15432/e2e
            # 18. apply migration sets audit,workflow and roll their partitions
            # 19. write /w/state/state.json (phase ready, the sets) and /w/state/connection.env (0600)
            # 20. only if a step above fails; the path is printed
            kind export logs '/w/state/kind/logs-<time>' --name e2e
        "##]]
        .assert_eq(&render(&kind_setup(&k, &deploy_input())));
    }

    #[test]
    fn podman_saves_an_archive_first() {
        let cmds = image_load_commands(Engine::Podman, "postgres:16", "e2e", Path::new("/t/image.tar"));
        let lines: Vec<String> = cmds.iter().map(|c| shell_words(c)).collect();
        expect![[r#"
            [
                "podman save --output /t/image.tar postgres:16",
                "kind load image-archive /t/image.tar --name e2e",
            ]
        "#]]
        .assert_debug_eq(&lines);
    }

    #[test]
    fn teardown_plans() {
        let state = Path::new("/w/state");
        let mut steps = kind_teardown(&KindTeardown {
            cluster: "e2e",
            namespace: "e2e-app-1a2b3c4d",
            kubeconfig: Path::new("/w/state/kind/kubeconfig"),
            lock: &LockPaths::new(Path::new("/home/u/.cache/e2e-migrations"), "e2e"),
            state_dir: state,
        });
        steps.extend(kube_teardown("context lab", "e2e-check", Some("3f9a1c2b"), false, state));
        steps.extend(kube_teardown("context lab", "team-a", Some("3f9a1c2b"), true, state));
        expect![[r##"
            # 1. take the lock /home/u/.cache/e2e-migrations/kind-e2e.lock (flock; waits while a setup or teardown of another checkout works on cluster "e2e"), held until the cluster is deleted or kept
            # 2.
            kind get clusters
            # 3. when the cluster exists: written to /w/state/kind/kubeconfig (0600)
            kind get kubeconfig --name e2e
            # 4. ask the cluster's API (at most 10 s) whether its node carries e2e-migrations/owner (created by e2e-setup), and list the namespaces of the checkouts using it (label e2e-migrations/checkout); a cluster whose API does not answer, or that e2e-setup did not create, is left alone: teardown stops, deletes nothing, keeps this checkout's record and says what to do
            # 5. delete this checkout's namespace e2e-app-1a2b3c4d (labelled e2e-migrations/checkout=<this checkout>)
            # 6. when no other checkout's namespace remains, whichever checkout created the cluster (the last one out deletes it); or when /home/u/.cache/e2e-migrations/kind-e2e.creating says an earlier create or delete was interrupted. That note is written before the delete and removed once the cluster is gone, so a delete killed half way is finished by the next teardown
            kind delete cluster --name e2e --kubeconfig /w/state/kind/kubeconfig
            # 7. remove /w/state/state.json and /w/state/connection.env
            # 8. context lab: delete namespace e2e-check when it is labelled app.kubernetes.io/managed-by=e2e-migrations for run 3f9a1c2b (nothing else), and wait until it is gone
            # 9. remove /w/state/state.json and /w/state/connection.env
            # 10. context lab: delete the deployment, service and secret labelled app.kubernetes.io/managed-by=e2e-migrations,e2e-migrations/run-id=3f9a1c2b in namespace team-a (never the namespace, never an object without the labels), and wait until its pod is gone
            # 11. remove /w/state/state.json and /w/state/connection.env
        "##]]
        .assert_eq(&render(&steps));
    }

    #[test]
    fn shell_words_quote_only_when_needed() {
        let argv = strings(&["docker", "image", "inspect", "--format", "{{.Id}}", "it's"]);
        assert_eq!(shell_words(&argv), r#"docker image inspect --format '{{.Id}}' 'it'\''s'"#);
    }
}
