//! The kind and kube backends from the command line: what needs no cluster runs everywhere; the
//! real end-to-end runs (setup, connect, query the migrated schema, teardown) need a cluster.
//!
//! The real kind test runs wherever `kind` and a running container engine are present (it makes
//! its own cluster, `e2e-migrations-test`, on host port 25432, and deletes it); elsewhere it
//! prints `skipped: ...` and passes (`.config/nextest.toml` shows that line in every run).
//! `E2E_SKIP_KIND=1` skips it on a machine that has kind; `E2E_REQUIRE_KIND=1` (for a CI job
//! that has kind) turns the skip into a failure. The kube test runs when `E2E_KUBE_CONTEXT`
//! names a cluster to test in; with `E2E_KUBE_NAMESPACE` it works in that namespace, made
//! beforehand (`--existing-namespace`), as an account bound only to docs/rbac/role.yaml would.
//! It covers a setup, the nextest setup script following it, psql through the forward, and
//! teardown; a setup that fails (an image the node lacks), then a plain teardown; and two
//! setups in parallel, one torn down, the other removed by the stale cleanup.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use e2e_test_support::process::{env_lines, on_path, run, stderr, stdout};
use e2e_test_support::{rt, TempDir};

fn xtask(state: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_xtask"));
    c.env_remove("DATABASE_URL")
        .env_remove("E2E_MIGRATIONS_DIR")
        .env_remove("E2E_CONFIG")
        .env_remove("E2E_BACKEND")
        .env_remove("KEEP_CLUSTER")
        .env("E2E_STATE_DIR", state);
    c
}

/// `command` (`e2e-setup` or `e2e-teardown`) `--backend kube --context ci --namespace
/// namespace --dry-run`, then `extra`; it must succeed.
fn kube_dry_run(state: &TempDir, command: &str, namespace: &str, extra: &[&str]) -> Output {
    let args = [command, "--backend", "kube", "--context", "ci", "--namespace", namespace, "--dry-run"];
    let o = run(xtask(state.path()).args(args).args(extra));
    assert!(o.status.success(), "{args:?} {extra:?}: {}", stderr(&o));
    o
}

#[test]
fn kind_dry_run_prints_commands_and_manifests_in_order_and_changes_nothing() {
    let state = TempDir::new("xtask-kind-dry");
    let o = run(xtask(state.path()).args(["e2e-setup", "--backend", "kind", "--dry-run", "--sets", "audit,workflow"]));
    let out = stdout(&o);
    assert!(o.status.success(), "stderr: {}", stderr(&o));
    let order = [
        "kind get clusters",
        "apiVersion: kind.x-k8s.io/v1alpha4",
        "listenAddress: 127.0.0.1",
        "kind create cluster --name e2e-migrations --config",
        "image inspect",
        "kind: Namespace",
        "kind: Secret",
        "POSTGRES_PASSWORD: <generated>",
        "kind: Service",
        "protocol: TCP",
        "kind: Deployment",
        "pg_isready",
        "apply migration sets audit,workflow",
    ];
    let mut at = 0;
    for needle in order {
        let found = out[at..].find(needle).unwrap_or_else(|| panic!("{needle:?} missing or out of order in:\n{out}"));
        at += found;
    }
    assert_eq!(state.entries(), 0, "a dry run writes nothing");
}

#[test]
fn kube_dry_run_needs_no_cluster_and_uses_a_port_forward() {
    let state = TempDir::new("xtask-kube-dry");
    let out = stdout(&kube_dry_run(&state, "e2e-setup", "e2e-pr-42", &[]));
    assert!(out.contains("to context ci, namespace e2e-pr-42"), "{out}");
    assert!(out.contains("type: ClusterIP") && !out.contains("nodePort"), "{out}");
    assert!(out.contains("connect: port-forward"), "{out}");
    let out = stdout(&kube_dry_run(&state, "e2e-teardown", "e2e-pr-42", &[]));
    assert!(out.contains("delete namespace e2e-pr-42 when it is labelled"), "{out}");
    assert_eq!(state.entries(), 0, "a dry run writes nothing");
}

#[test]
fn kube_dry_run_in_an_existing_namespace_makes_no_namespace_and_labels_every_object() {
    let state = TempDir::new("xtask-kube-dry-existing");
    let out = stdout(&kube_dry_run(&state, "e2e-setup", "team-a", &["--existing-namespace"]));
    assert!(
        out.contains("namespace team-a was made by someone else (--existing-namespace): not read, created or deleted"),
        "{out}"
    );
    assert!(!out.contains("kind: Namespace"), "{out}");
    assert_eq!(
        out.matches("e2e-migrations/run-id: ").count(),
        4,
        "secret, service, deployment and its pod template: {out}"
    );
    for field in ["runAsNonRoot: true", "allowPrivilegeEscalation: false", "- ALL", "type: RuntimeDefault", "limits:"] {
        assert!(out.contains(field), "{field} missing in:\n{out}");
    }
    let extra = ["--existing-namespace", "--run-id", "3f9a1c2b"];
    let out = stdout(&kube_dry_run(&state, "e2e-teardown", "team-a", &extra));
    assert!(out.contains("e2e-migrations/run-id=3f9a1c2b in namespace team-a (never the namespace, never an object without the labels)"), "{out}");
    assert_eq!(state.entries(), 0, "a dry run writes nothing");
}

/// What a dry run says it writes, removes or exports lies in the state folder in use
/// (`E2E_STATE_DIR` here), not in the default `target/e2e` (issue #11).
#[test]
fn dry_runs_name_the_state_folder_in_use() {
    let state = TempDir::new("xtask-dry-state");
    let record = state.path().join("state.json").display().to_string();
    let kind = |command: &str| {
        let o = run(xtask(state.path()).args([command, "--backend", "kind", "--dry-run"]));
        assert!(o.status.success(), "{command}: {}", stderr(&o));
        o
    };
    let runs = [
        ("kind setup", kind("e2e-setup")),
        ("kind teardown", kind("e2e-teardown")),
        ("kube setup", kube_dry_run(&state, "e2e-setup", "e2e-pr-42", &[])),
        ("kube teardown", kube_dry_run(&state, "e2e-teardown", "e2e-pr-42", &[])),
    ];
    for (what, o) in &runs {
        let out = stdout(o);
        assert!(out.contains(&record), "the {what} dry run does not name {record}:\n{out}");
        assert!(
            !out.contains("target/e2e"),
            "the {what} dry run names target/e2e, not the state folder in use:\n{out}"
        );
    }
    let logs = state.path().join("kind/logs-<time>").display().to_string();
    assert!(stdout(&runs[0].1).contains(&logs), "the logs go to {logs}:\n{}", stdout(&runs[0].1));
    assert_eq!(state.entries(), 0, "a dry run writes nothing");
}

#[test]
fn stale_cleanup_flags_are_checked_before_any_cluster_is_asked() {
    let state = TempDir::new("xtask-stale-flags");
    let teardown = |args: &[&str]| {
        let o = run(xtask(state.path()).arg("e2e-teardown").args(args));
        assert!(!o.status.success(), "{args:?} must fail");
        stderr(&o)
    };
    let e = teardown(&["--stale", "2", "--context", "ci", "--namespace", "team-a"]);
    assert!(e.contains("--stale \"2\": expected an age such as 2h, 90m, 1h30m or 2d"), "{e}");
    let e = teardown(&["--stale", "0m", "--context", "ci", "--namespace", "team-a"]);
    assert!(e.contains("the age must be above zero"), "{e}");
    let e = teardown(&["--stale", "2h", "--context", "ci"]);
    assert!(e.contains("--stale needs --namespace N (a Role there is enough) or --all-namespaces"), "{e}");
    let e = teardown(&["--stale", "2h", "--namespace", "team-a"]);
    assert!(e.contains("--stale needs --context CONTEXT"), "{e}");
    let e = teardown(&["--stale", "2h", "--backend", "local", "--context", "ci", "--all-namespaces"]);
    assert!(e.contains("--stale is for --backend kube"), "{e}");
    let e = teardown(&["--all-namespaces", "--context", "ci"]);
    assert!(e.contains("--stale"), "clap names the missing flag: {e}");
    assert_eq!(state.entries(), 0);
}

#[test]
fn existing_namespace_is_refused_for_kind() {
    let state = TempDir::new("xtask-kind-existing");
    let o = run(xtask(state.path()).args(["e2e-setup", "--backend", "kind", "--existing-namespace", "--dry-run"]));
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--existing-namespace is for --backend kube"), "{}", stderr(&o));
}

#[test]
fn a_root_uid_in_the_config_names_the_file_and_field() {
    let state = TempDir::new("xtask-root-uid");
    let file = state.path().join("e2e.toml");
    std::fs::write(&file, "[postgres]\nrun_as_user = 0\n").unwrap();
    let args = ["e2e-setup", "--backend", "kube", "--context", "ci", "--namespace", "n", "--dry-run", "--config"];
    let o = run(xtask(state.path()).args(args).arg(&file));
    let err = stderr(&o);
    assert!(!o.status.success());
    assert!(
        err.contains("e2e.toml: postgres.run_as_user 0 is root, which the restricted Pod Security Standard forbids"),
        "{err}"
    );
}

#[test]
fn missing_kind_fails_within_seconds_saying_what_to_install() {
    let state = TempDir::new("xtask-no-kind");
    let empty = TempDir::new("xtask-empty-path");
    let start = Instant::now();
    let o =
        run(xtask(state.path()).env("PATH", empty.path()).args(["e2e-setup", "--backend", "kind", "--sets", "audit"]));
    let err = stderr(&o);
    assert!(!o.status.success());
    assert!(start.elapsed() < Duration::from_secs(10), "took {:?}", start.elapsed());
    assert!(err.contains("--backend kind: `kind` is not on PATH: install kind"), "{err}");
    assert!(err.contains("or use --backend local"), "{err}");
    assert_eq!(state.entries(), 0, "a setup that cannot start writes nothing");
}

#[test]
fn kube_without_context_names_the_flag() {
    let state = TempDir::new("xtask-kube-noctx");
    let o = run(xtask(state.path()).args(["e2e-setup", "--backend", "kube", "--namespace", "x"]));
    assert!(!o.status.success());
    assert!(stderr(&o).contains("needs --context CONTEXT"), "{}", stderr(&o));
}

#[test]
fn a_bad_config_file_names_the_file_and_field() {
    let state = TempDir::new("xtask-bad-config");
    let file = state.path().join("e2e.toml");
    std::fs::write(&file, "[postgres]\nnode_port = 80\n").unwrap();
    let o = run(xtask(state.path()).args(["e2e-setup", "--backend", "kind", "--dry-run"]).arg("--config").arg(&file));
    let err = stderr(&o);
    assert!(!o.status.success());
    assert!(err.contains("e2e.toml: postgres.node_port 80: a NodePort must be in 30000-32767"), "{err}");
}

// ---- against a real cluster ----

/// Why the real kind test cannot run here, if it cannot.
fn kind_missing() -> Option<String> {
    if !on_path("kind") {
        return Some("`kind` is not on PATH: install kind and start docker or podman to run it".to_string());
    }
    let engine =
        if std::env::var("KIND_EXPERIMENTAL_PROVIDER").as_deref() == Ok("podman") { "podman" } else { "docker" };
    match Command::new(engine).args(["info"]).stdout(Stdio::null()).stderr(Stdio::null()).status() {
        Ok(s) if s.success() => None,
        _ => Some(format!("`{engine} info` does not answer: start {engine} to run it")),
    }
}

fn skip_or_fail(why: &str) {
    if std::env::var("E2E_REQUIRE_KIND").as_deref() == Ok("1") {
        panic!("E2E_REQUIRE_KIND=1 but {why}");
    }
    eprintln!("skipped: {why} (how to run it: docs/kind.md)");
}

fn get<'a>(env: &'a [(String, String)], key: &str) -> &'a str {
    env.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("--print-env has no {key}: {env:?}"))
}

async fn migrated_tables(client: &tokio_postgres::Client) -> Vec<String> {
    let rows = client
        .query(
            "SELECT table_name::text FROM information_schema.tables
              WHERE table_schema = 'public' AND table_name IN ('audit_events', 'remediation_workflow_catalog', 'goose_db_version')
              ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    rows.iter().map(|r| r.get(0)).collect()
}

#[test]
fn kind_setup_connect_query_teardown() {
    if std::env::var("E2E_SKIP_KIND").as_deref() == Ok("1") {
        return skip_or_fail("E2E_SKIP_KIND=1");
    }
    if let Some(why) = kind_missing() {
        return skip_or_fail(&why);
    }
    let state = TempDir::new("xtask-kind-e2e");
    let config = state.path().join("e2e.toml");
    std::fs::write(
        &config,
        "[cluster]\nname = \"e2e-migrations-test\"\n[postgres]\nhost_port = 25432\nnode_port = 30433\n",
    )
    .unwrap();
    let setup = || {
        run(xtask(state.path())
            .args(["e2e-setup", "--backend", "kind", "--sets", "audit,workflow", "--print-env", "--config"])
            .arg(&config))
    };
    let o = setup();
    assert!(o.status.success(), "setup failed: {}", stderr(&o));
    let env = env_lines(&stdout(&o));
    let url = get(&env, "DATABASE_URL").to_string();
    assert!(url.contains("@127.0.0.1:25432/"), "{url}");
    assert!(Path::new(get(&env, "KUBECONFIG")).is_file());

    let rt = rt();
    let tables = rt.block_on(async {
        let client = e2e_migrations::db::connect(&url).await.unwrap();
        migrated_tables(&client).await
    });
    assert_eq!(tables, ["audit_events", "goose_db_version", "remediation_workflow_catalog"]);

    let warm = Instant::now();
    let o = setup();
    assert!(o.status.success(), "warm setup failed: {}", stderr(&o));
    assert!(stderr(&o).contains("reused"), "{}", stderr(&o));
    eprintln!("warm setup: {:?}", warm.elapsed());

    let o = run(xtask(state.path()).args(["e2e-teardown", "--config"]).arg(&config));
    assert!(o.status.success(), "teardown failed: {}", stderr(&o));
    let clusters = Command::new("kind").args(["get", "clusters"]).output().unwrap();
    assert!(!stdout(&clusters).lines().any(|l| l == "e2e-migrations-test"), "cluster still there");
    let o = run(xtask(state.path()).args(["e2e-teardown", "--backend", "kind", "--config"]).arg(&config));
    assert!(o.status.success(), "a second teardown is a no-op: {}", stderr(&o));
}

#[test]
fn kube_setup_connect_query_teardown() {
    let Ok(context) = std::env::var("E2E_KUBE_CONTEXT") else {
        return skip_or_fail("E2E_KUBE_CONTEXT is not set (the kubeconfig context of a cluster to test in)");
    };
    let state = TempDir::new("xtask-kube-e2e");
    let dir_name = state.path().file_name().unwrap().to_string_lossy().into_owned();
    // E2E_KUBE_NAMESPACE: a namespace made beforehand (--existing-namespace), for a Role-only account
    let existing = std::env::var("E2E_KUBE_NAMESPACE").ok().filter(|n| !n.is_empty());
    let namespace = existing.clone().unwrap_or_else(|| format!("e2e-test-{}", dir_name.rsplit('-').next().unwrap()));
    let mut config_args: Vec<String> =
        std::env::var("E2E_CONFIG").map(|c| vec!["--config".to_string(), c]).unwrap_or_default();
    if existing.is_some() {
        config_args.push("--existing-namespace".to_string());
    }
    let o = run(xtask(state.path())
        .args([
            "e2e-setup",
            "--backend",
            "kube",
            "--context",
            &context,
            "--namespace",
            &namespace,
            "--sets",
            "audit,workflow",
            "--print-env",
        ])
        .args(&config_args));
    assert!(o.status.success(), "setup failed: {}", stderr(&o));
    let env = env_lines(&stdout(&o));
    assert_eq!(get(&env, "E2E_NAMESPACE"), namespace);
    let run_id = get(&env, "E2E_RUN_ID").to_string();

    let server = e2e_migrations::kube::Server {
        kubeconfig: std::env::var_os("KUBECONFIG").map(PathBuf::from),
        context: Some(context.clone()),
        namespace: namespace.clone(),
        run_id: Some(run_id.clone()),
    };
    let rt = rt();
    let (tables, report) = rt.block_on(async {
        let (client, forward) = server.connect().await.unwrap();
        let tables = migrated_tables(&client).await;
        drop(client);
        forward.abort();
        // the library entry point: the same sets again through the port-forward apply nothing
        let project = e2e_migrations::Project::load_default().unwrap();
        let sets = ["audit".to_string(), "workflow".to_string()];
        let report = server.migrate_and_roll(&project, &sets, &Default::default()).await.unwrap();
        (tables, report)
    });
    assert_eq!(tables, ["audit_events", "goose_db_version", "remediation_workflow_catalog"]);
    assert!(report.migrations.applied.is_empty(), "{:?}", report.migrations.applied);

    // the nextest setup script (`cargo xtask e2e-setup --print-env`, no flags) follows the
    // cluster setup: same namespace and run, nothing created, no DATABASE_URL of another server
    let warm = Instant::now();
    let o = run(xtask(state.path()).args(["e2e-setup", "--print-env"]));
    assert!(o.status.success(), "the setup script failed: {}", stderr(&o));
    let said = stderr(&o);
    assert!(said.contains("backend: kube (following this checkout's kube setup"), "{said}");
    assert!(said.contains(&format!("reused: namespace {namespace}, pod postgres-{run_id}-")), "{said}");
    assert!(said.contains(", 0 applied"), "{said}");
    let env = env_lines(&stdout(&o));
    assert_eq!((get(&env, "E2E_NAMESPACE"), get(&env, "E2E_RUN_ID")), (namespace.as_str(), run_id.as_str()));
    assert!(!env.iter().any(|(k, _)| k == "DATABASE_URL"), "{env:?}");
    eprintln!("warm setup (the nextest setup script): {:?}", warm.elapsed());

    if on_path("psql") {
        let o = run(xtask(state.path()).args(["psql", "--", "-tAc", "select 1"]));
        assert!(o.status.success(), "psql failed: {}", stderr(&o));
        assert_eq!(stdout(&o).trim(), "1");
    }

    let o = run(xtask(state.path()).args(["e2e-teardown"]));
    assert!(o.status.success(), "teardown failed: {}", stderr(&o));
    let said = stderr(&o);
    assert!(said.contains("deleted"), "{said}");
    if existing.is_some() {
        assert!(said.contains(&format!("deployment postgres-{run_id}")), "{said}");
        assert!(said.contains("the namespace is left as it was"), "{said}");
    }
    let o = run(xtask(state.path()).args(["e2e-teardown"]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).starts_with("nothing is set up in this checkout"), "{}", stderr(&o));
}

#[test]
fn kube_failed_setup_then_teardown() {
    let Ok(context) = std::env::var("E2E_KUBE_CONTEXT") else {
        return skip_or_fail("E2E_KUBE_CONTEXT is not set (the kubeconfig context of a cluster to test in)");
    };
    let state = TempDir::new("xtask-kube-fail");
    let dir_name = state.path().file_name().unwrap().to_string_lossy().into_owned();
    let existing = std::env::var("E2E_KUBE_NAMESPACE").ok().filter(|n| !n.is_empty());
    let namespace = existing.clone().unwrap_or_else(|| format!("e2e-fail-{}", dir_name.rsplit('-').next().unwrap()));
    // an image the node does not have, never pulled: the pod never becomes ready
    let config = state.path().join("e2e.toml");
    std::fs::write(
        &config,
        "[postgres]\nimage = \"k8slab/no-such-image:0\"\nimage_pull_policy = \"Never\"\nready_timeout_s = 15\n",
    )
    .unwrap();
    let mut args: Vec<String> = ["e2e-setup", "--backend", "kube", "--context", &context, "--namespace", &namespace]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(["--sets".to_string(), "audit".to_string(), "--config".to_string(), config.display().to_string()]);
    if existing.is_some() {
        args.push("--existing-namespace".to_string());
    }
    let started = Instant::now();
    let o = run(xtask(state.path()).args(&args));
    let said = stderr(&o);
    assert!(!o.status.success(), "the setup must fail: {said}");
    assert!(said.contains("was not ready after 15 s"), "{said}");
    assert!(said.contains("ErrImageNeverPull"), "{said}");
    assert!(said.contains("to remove what this setup made: cargo xtask e2e-teardown"), "{said}");
    assert!(said.lines().count() <= 40, "the diagnosis stays short:\n{said}");
    eprintln!("failed setup: {:?}", started.elapsed());
    let rec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(state.path().join("state.json")).unwrap()).unwrap();
    assert_eq!(rec["phase"], "creating", "{rec}");
    assert_eq!(rec["setup"]["namespace"], namespace.as_str());

    // plain teardown finds what the failed setup made, from the record
    let o = run(xtask(state.path()).args(["e2e-teardown"]));
    let said = stderr(&o);
    assert!(o.status.success(), "teardown failed: {said}");
    assert!(said.contains("deleted"), "{said}");
    assert!(!said.contains("local PostgreSQL"), "{said}");
    assert!(!state.path().join("state.json").exists());
    let o = run(xtask(state.path()).args(["e2e-teardown"]));
    assert!(stderr(&o).starts_with("nothing is set up in this checkout"), "{}", stderr(&o));
}

/// Two runs at once, as two CI jobs sharing a cluster would start them: two checkouts (state
/// folders) set up in parallel, in one namespace made beforehand (`E2E_KUBE_NAMESPACE`, the
/// Role-only case) or in two namespaces of their own. Each gets its own run, server and
/// port-forward; one's teardown leaves the other working; then `--stale` keeps the younger run
/// and removes it once it has been idle for longer than the age given.
#[test]
fn kube_two_setups_in_parallel_do_not_interfere() {
    let Ok(context) = std::env::var("E2E_KUBE_CONTEXT") else {
        return skip_or_fail("E2E_KUBE_CONTEXT is not set (the kubeconfig context of a cluster to test in)");
    };
    let existing = std::env::var("E2E_KUBE_NAMESPACE").ok().filter(|n| !n.is_empty());
    let config: Vec<String> = std::env::var("E2E_CONFIG").map(|c| vec!["--config".to_string(), c]).unwrap_or_default();
    let states = [TempDir::new("xtask-kube-par-a"), TempDir::new("xtask-kube-par-b")];
    let namespaces: Vec<String> = states
        .iter()
        .map(|s| {
            let dir_name = s.path().file_name().unwrap().to_string_lossy().into_owned();
            existing.clone().unwrap_or_else(|| format!("e2e-par-{}", dir_name.rsplit('-').next().unwrap()))
        })
        .collect();
    let setup = |i: usize| {
        let mut c = xtask(states[i].path());
        c.args(["e2e-setup", "--backend", "kube", "--context", &context, "--namespace", &namespaces[i]])
            .args(["--sets", "audit", "--print-env"])
            .args(&config);
        if existing.is_some() {
            c.arg("--existing-namespace");
        }
        c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        c.spawn().expect("start xtask")
    };
    let started = Instant::now();
    let children = [setup(0), setup(1)];
    let outputs: Vec<Output> = children.into_iter().map(|c| c.wait_with_output().unwrap()).collect();
    eprintln!("two setups in parallel: {:?}", started.elapsed());
    for o in &outputs {
        assert!(o.status.success(), "a parallel setup failed: {}", stderr(o));
    }
    let runs: Vec<String> = outputs.iter().map(|o| get(&env_lines(&stdout(o)), "E2E_RUN_ID").to_string()).collect();
    assert_ne!(runs[0], runs[1], "names are unique per run");
    let server = |i: usize| e2e_migrations::kube::Server {
        kubeconfig: std::env::var_os("KUBECONFIG").map(PathBuf::from),
        context: Some(context.clone()),
        namespace: namespaces[i].clone(),
        run_id: Some(runs[i].clone()),
    };
    let rt = rt();
    // both at once, each through its own port-forward, each on its own server
    rt.block_on(async {
        let ((a, fa), (b, fb)) = (server(0).connect().await.unwrap(), server(1).connect().await.unwrap());
        a.batch_execute("CREATE TABLE only_in_a (id int)").await.unwrap();
        let seen: i64 =
            b.query_one("SELECT count(*) FROM pg_tables WHERE tablename = 'only_in_a'", &[]).await.unwrap().get(0);
        assert_eq!(seen, 0, "the two runs share a server");
        drop((a, b));
        fa.abort();
        fb.abort();
    });

    // a's teardown leaves b's run working
    let o = run(xtask(states[0].path()).args(["e2e-teardown"]));
    assert!(o.status.success(), "teardown of a failed: {}", stderr(&o));
    let tables = rt.block_on(async {
        let (client, forward) = server(1).connect().await.unwrap();
        let t = migrated_tables(&client).await;
        drop(client);
        forward.abort();
        t
    });
    assert_eq!(tables, ["audit_events", "goose_db_version"], "b still works after a's teardown");

    // the stale cleanup: b is younger than 2h, so kept; idle for longer than 5s, removed
    let mut stale = xtask(states[1].path());
    stale.args(["e2e-teardown", "--backend", "kube", "--context", &context, "--namespace", &namespaces[1]]);
    let o = run(stale.args(["--stale", "2h"]));
    assert!(o.status.success(), "--stale 2h failed: {}", stderr(&o));
    let said = stderr(&o);
    let b_run = format!("run {} in namespace {}", runs[1], namespaces[1]);
    assert!(said.lines().any(|l| l.contains(&b_run) && l.ends_with("kept (younger than 2h)")), "{said}");
    std::thread::sleep(Duration::from_secs(6));
    let mut stale = xtask(states[1].path());
    stale.args(["e2e-teardown", "--backend", "kube", "--context", &context, "--namespace", &namespaces[1]]);
    let started = Instant::now();
    let o = run(stale.args(["--stale", "5s"]));
    assert!(o.status.success(), "--stale 5s failed: {}", stderr(&o));
    let said = stderr(&o);
    assert!(said.lines().any(|l| l.contains(&b_run) && l.contains("stale: removing")), "{said}");
    assert!(!said.contains(&runs[0]), "a's run was torn down already: {said}");
    eprintln!("stale cleanup of one run: {:?}", started.elapsed());
    // b's own teardown then finds nothing of its run left, and forgets it
    let o = run(xtask(states[1].path()).args(["e2e-teardown"]));
    assert!(o.status.success(), "teardown of b after the cleanup failed: {}", stderr(&o));
}
