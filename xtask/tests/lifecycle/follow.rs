//! A setup that the rest of the workflow follows (issue 12), on real checkouts, without a
//! cluster: a kube setup is recorded before the cluster changes and followed by `auto` (the
//! nextest setup script) and teardown, against a fake API server that answers `/version` and
//! refuses everything else; teardown without a record changes nothing; relative paths are
//! taken from the workspace root; `psql` reaches the setup's database; later commands use the
//! setup's sets; a warm setup says what it reused.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::support::*;

/// A fake Kubernetes API server on 127.0.0.1 (plain HTTP): `/version` answers, every other
/// request is Forbidden. The requests it saw, as `METHOD path`.
struct FakeApi {
    port: u16,
    seen: Arc<Mutex<Vec<String>>>,
}

impl FakeApi {
    fn start() -> FakeApi {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for mut s in l.incoming().flatten() {
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && s.read(&mut b).map(|n| n == 1).unwrap_or(false) {
                    head.push(b[0]);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let line = head.lines().next().unwrap_or("").to_string();
                let mut parts = line.split(' ');
                let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                let len: usize = head
                    .lines()
                    .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string()))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let mut body = vec![0u8; len];
                let _ = s.read_exact(&mut body);
                log.lock().unwrap().push(format!("{method} {}", path.split('?').next().unwrap_or("")));
                let (status, text) = if path == "/version" {
                    ("200 OK", r#"{"major":"1","minor":"20","gitVersion":"v1.20.2","gitCommit":"0","gitTreeState":"clean","buildDate":"2021-01-01T00:00:00Z","goVersion":"go1.19","compiler":"gc","platform":"linux/amd64"}"#.to_string())
                } else {
                    (
                        "403 Forbidden",
                        r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"forbidden by the fake API server","reason":"Forbidden","code":403}"#
                            .to_string(),
                    )
                };
                let _ = write!(
                    s,
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                    text.len()
                );
            }
        });
        FakeApi { port, seen }
    }

    /// A kubeconfig with the context `fake` pointing at it.
    fn kubeconfig(&self, dir: &Path) -> std::path::PathBuf {
        let f = dir.join("fake.kubeconfig");
        std::fs::write(
            &f,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://127.0.0.1:{}\n\
                 contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: u\nusers:\n- name: u\n  user:\n    token: t\n\
                 current-context: fake\n",
                self.port
            ),
        )
        .unwrap();
        f
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

fn record(c: &Checkout) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(c.state_dir().join("state.json")).unwrap()).unwrap()
}

/// Cases 1, 2 and 3 of the issue: a kube setup that fails once it reached the cluster is
/// recorded (before the first change on the cluster); the nextest setup script (`e2e-setup
/// --print-env`, backend auto) follows it instead of starting a local server; another backend
/// is refused; teardown acts on the recorded namespace and never on a local server.
#[test]
fn a_failed_kube_setup_is_recorded_followed_by_auto_and_torn_down_by_its_record() {
    let tmp = TempDir::new("follow-kube");
    let fake = FakeApi::start();
    let mut c = Checkout::new(&tmp.path().join("a"));
    c.env.push(("KUBECONFIG".into(), fake.kubeconfig(tmp.path()).display().to_string()));
    let o =
        c.run(&["e2e-setup", "--backend", "kube", "--context", "fake", "--namespace", "e2e-fail", "--sets", "audit"]);
    assert!(!o.status.success(), "the fake API refuses the namespace: {}", stderr(&o));
    let r = record(&c);
    assert_eq!((r["phase"].as_str(), r["setup"]["backend"].as_str()), (Some("creating"), Some("kube")), "{r}");
    assert_eq!(r["setup"]["namespace"], "e2e-fail");
    assert_eq!(r["setup"]["context"], "fake");
    let run_id = r["setup"]["run_id"].as_str().unwrap().to_string();
    assert_eq!(run_id.len(), 8, "{r}");
    assert_eq!(fake.seen()[..2], ["GET /version".to_string(), "GET /api/v1/namespaces/e2e-fail".to_string()]);

    // the nextest setup script: auto follows the cluster setup (and fails with it), never local
    let o = c.run(&["e2e-setup", "--print-env"]);
    assert!(!o.status.success());
    let said = stderr(&o);
    assert!(
        said.contains(&format!(
            "backend: kube (following this checkout's kube setup in namespace e2e-fail (context fake, run {run_id}))"
        )),
        "{said}"
    );
    assert!(!said.contains("local PostgreSQL"), "{said}");
    assert!(stdout(&o).is_empty(), "no DATABASE_URL of another server: {}", stdout(&o));
    assert_eq!(record(&c)["setup"]["run_id"], run_id.as_str(), "the same run, the same record");
    assert!(!c.state_dir().join("local").exists(), "no local server was made");

    // another backend would strand the namespace: refused before anything is done
    let o = c.run(&["e2e-setup", "--backend", "local"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("this checkout is set up already: a kube setup in namespace e2e-fail")
            && stderr(&o).contains("`cargo xtask e2e-teardown` removes it"),
        "{}",
        stderr(&o)
    );
    assert!(!c.state_dir().join("local").exists());

    // plain teardown finds the namespace through the record (the fake refuses, so it stays)
    let before = fake.seen().len();
    let o = c.run(&["e2e-teardown"]);
    assert!(!o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("local PostgreSQL"), "{}", stderr(&o));
    assert_eq!(fake.seen()[before..], ["GET /api/v1/namespaces/e2e-fail".to_string()]);
    assert_eq!(record(&c)["setup"]["namespace"], "e2e-fail", "a failed teardown keeps the record");
    std::fs::remove_file(c.state_dir().join("state.json")).unwrap();
}

/// Case 3 of the issue: with no record left, teardown changes nothing and says so; a local
/// server in the state folder is left running and named.
#[test]
fn teardown_with_no_state_changes_nothing_and_leaves_a_local_server_alone() {
    let tmp = TempDir::new("follow-none");
    let c = Checkout::new(&tmp.path().join("a"));
    let o = c.teardown();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).starts_with("nothing is set up in this checkout (no "), "{}", stderr(&o));
    assert!(!c.state_dir().exists(), "teardown made nothing");

    let url = c.setup("audit");
    let rec = c.state_dir().join("state.json");
    let kept = tmp.path().join("state.json.kept");
    std::fs::rename(&rec, &kept).unwrap();
    let o = c.teardown();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("nothing torn down") && stderr(&o).contains("--backend local` stops and removes it"));
    assert!(data_dir_of(&url).is_some(), "the local server still runs");
    std::fs::rename(&kept, &rec).unwrap();
    let o = c.teardown();
    assert!(stderr(&o).contains("stopped and removed"), "{}", stderr(&o));
    assert!(data_dir_of(&url).is_none());
}

/// Case 4 of the issue: relative paths in settings and environment variables are taken from
/// the workspace root, also when the command runs in a subfolder (as `cargo test` runs a test
/// binary in its crate's folder).
#[test]
fn relative_settings_paths_are_taken_from_the_workspace_root() {
    let tmp = TempDir::new("follow-paths");
    let c = Checkout::new(&tmp.path().join("a"));
    std::fs::create_dir_all(c.root.join("xtask")).unwrap();
    std::fs::create_dir_all(c.root.join("lab")).unwrap();
    std::fs::write(
        c.root.join("lab/e2e.toml"),
        "[postgres]\nimage = \"k8slab/postgres:15\"\nimage_pull_policy = \"Never\"\n",
    )
    .unwrap();
    cp_a(&c.root.join("migrations"), &c.root.join("lab/migrations"));
    let args = ["e2e-setup", "--backend", "kube", "--context", "x", "--namespace", "n", "--dry-run"];
    for (env, flag) in [(Some("lab/e2e.toml"), None), (None, Some("lab/e2e.toml"))] {
        let mut cmd = c.xtask();
        cmd.current_dir(c.root.join("xtask")).args(args);
        if let Some(e) = env {
            cmd.env("E2E_CONFIG", e);
        }
        if let Some(f) = flag {
            cmd.args(["--config", f]);
        }
        let o = cmd.output().unwrap();
        assert!(o.status.success(), "{env:?} {flag:?}: {}", stderr(&o));
        assert!(stdout(&o).contains("image: k8slab/postgres:15"), "{}", stdout(&o));
        assert!(stderr(&o).contains(&format!("settings: {}", c.root.join("lab/e2e.toml").display())));
    }
    let o = c
        .xtask()
        .current_dir(c.root.join("xtask"))
        .env("E2E_MIGRATIONS_DIR", "lab/migrations")
        .args(["migrate", "plan", "--sets", "audit", "--database-url", "postgres://u:x@127.0.0.1:1/none"])
        .output()
        .unwrap();
    assert!(stderr(&o).contains("connecting to 127.0.0.1:1"), "the folder was read: {}", stderr(&o));
}

/// Case 5 of the issue, on the local backend (the kube test runs it through a forward): psql
/// opens the setup's database, the password in a 0600 file and never on its command line, and
/// its exit code is passed on.
#[test]
fn psql_opens_the_setups_database_without_the_password_on_its_command_line() {
    let tmp = TempDir::new("follow-psql");
    let c = Checkout::new(&tmp.path().join("a"));
    let url = c.setup("audit");
    let password = url.split('@').next().unwrap().rsplit(':').next().unwrap().to_string();

    let o = c.run(&["psql", "--", "-tAc", "select current_database() || ' ' || 1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "e2e 1");
    let o = c.run(&["psql", "--", "-d", "no_such_database", "-c", "select 1"]);
    assert_eq!(o.status.code(), Some(2), "psql's own exit code: {}", stderr(&o));

    // what psql is given: a fake psql first on PATH shows its arguments and environment
    let bin = tmp.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let fake = bin.join("psql");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho \"args: $*\"\necho \"PGPASSWORD=${PGPASSWORD-unset}\"\necho \"mode $(stat -c %a \"$PGPASSFILE\")\"\n\
         cat \"$PGPASSFILE\"\necho \"$PGPASSFILE\" > \"$0.file\"\nexit 7\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let o = c
        .xtask()
        .env("PATH", path)
        .env("PGPASSWORD", "inherited")
        .args(["psql", "--", "-c", "select 1"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
    let out = stdout(&o);
    let args = out.lines().next().unwrap();
    assert_eq!(args, "args: -c select 1");
    assert!(!args.contains(&password));
    assert!(out.contains("PGPASSWORD=unset\nmode 600\n"), "{out}");
    assert!(out.contains(&format!(":*:e2e:{password}")), "the password file holds it: {out}");
    let passfile = std::fs::read_to_string(bin.join("psql.file")).unwrap();
    assert!(!Path::new(passfile.trim()).exists(), "removed when psql exits");
    assert!(!stderr(&o).contains(&password), "{}", stderr(&o));
}

/// Case 6 of the issue: after `--sets audit`, `migrate status` lists audit's migrations, not
/// workflow's as pending.
#[test]
fn later_commands_default_to_the_setups_sets() {
    let tmp = TempDir::new("follow-sets");
    let c = Checkout::new(&tmp.path().join("a"));
    c.setup("audit");
    let o = c.run(&["migrate", "status"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("sets: audit (this checkout's setup"), "{}", stderr(&o));
    let listed = format!("{}{}", stdout(&o), stderr(&o));
    assert!(listed.contains("013_create_audit_events_table"), "{listed}");
    assert!(!listed.contains("015_create_workflow_catalog_table"), "workflow was not set up: {listed}");
    let o = c.run(&["migrate", "status", "--sets", "workflow"]);
    assert!(format!("{}{}", stdout(&o), stderr(&o)).contains("015_create_workflow_catalog_table"));
    // another folder has sets of its own (here none): the setup's are not carried over
    let other = tmp.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("001_x.sql"), "-- +goose Up\nCREATE TABLE x (id int);\n").unwrap();
    let o = c.run(&["migrate", "plan", "--migrations-dir", other.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(format!("{}{}", stdout(&o), stderr(&o)).contains("001_x.sql"), "{}", stderr(&o));
}

/// Case 7 of the issue, on the local backend (the kube test checks a warm kube setup): a warm
/// setup, following the first with its sets, says what it reused.
#[test]
fn a_warm_setup_says_what_it_reused() {
    let tmp = TempDir::new("follow-warm");
    let c = Checkout::new(&tmp.path().join("a"));
    let url = c.setup("audit");
    let o = c.run(&["e2e-setup"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let port = url.rsplit(':').next().unwrap().split('/').next().unwrap();
    assert!(stderr(&o).contains("backend: local (following this checkout's local setup)"), "{}", stderr(&o));
    assert!(stderr(&o).contains(&format!("reused: local server on 127.0.0.1:{port}, 0 applied")), "{}", stderr(&o));
    assert!(stderr(&o).contains("migrations (audit)"), "the setup's sets: {}", stderr(&o));
}

/// A setup whose migration fails keeps the sets it was asked for: the next plain setup (the
/// nextest setup script) retries those, and never applies a set nobody asked for.
#[test]
fn a_failed_setup_keeps_its_sets_for_the_next() {
    let tmp = TempDir::new("follow-failed-sets");
    let c = Checkout::new(&tmp.path().join("a"));
    let file = c.root.join("migrations/015_create_workflow_catalog_table.sql");
    let good = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        good.replacen("-- +goose Up\n", "-- +goose Up\nSELECT no_such_column FROM no_such_table;\n", 1),
    )
    .unwrap();
    let o = c.run(&["e2e-setup", "--backend", "local", "--sets", "audit,workflow"]);
    assert!(!o.status.success(), "the broken migration must fail the setup: {}", stderr(&o));
    assert!(stderr(&o).contains("015_create_workflow_catalog_table.sql"), "{}", stderr(&o));
    assert_eq!(record(&c)["setup"]["sets"], serde_json::json!(["audit", "workflow"]), "{}", record(&c));
    std::fs::write(&file, good).unwrap();
    let o = c.run(&["e2e-setup"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("migrations (audit,workflow): 1 applied, 1 already applied"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("021_create_notification_audit_table"), "a set nobody asked for: {}", stderr(&o));
}
