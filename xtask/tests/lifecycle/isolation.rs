//! A checkout's state belongs to that checkout: copies, shared target folders and state files
//! that point elsewhere never let one checkout reuse, stop or delete another's server.

use std::path::Path;
use std::time::Duration;

use crate::support::{cp_a, data_dir_of, files_named, query_text, stderr, Checkout, TempDir};

/// Whether the server behind `url` answers, and runs from a data folder under `root`.
fn serves_from(url: &str, root: &Path) -> bool {
    let root = root.canonicalize().unwrap();
    data_dir_of(url).is_some_and(|d| d.starts_with(&root) || is_temp_of(&d, &root))
}

/// A server relocated under /tmp (a deep or private state folder) still belongs to `root`: its
/// log names the socket under the state folder or the /tmp folder; accept it when the record of
/// `root` names the temp place.
fn is_temp_of(data: &Path, root: &Path) -> bool {
    let rec = std::fs::read_to_string(root.join("target/e2e/state.json")).unwrap_or_default();
    data.starts_with("/tmp") && rec.contains("\"place\": \"temp\"")
}

#[test]
fn a_copied_checkout_neither_stops_nor_reuses_the_originals_server() {
    let tmp = TempDir::new("copy");
    let a = Checkout::new(&tmp.path().join("a"));
    let url_a = a.setup("notification");
    assert!(serves_from(&url_a, &a.root));

    // `cp -a` of the checkout with its target/ (as a CI cache restore does), server running.
    cp_a(&a.root, &tmp.path().join("b"));
    let b = Checkout::at(&tmp.path().join("b"));

    let o = b.teardown();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(serves_from(&url_a, &a.root), "teardown in the copy stopped the original's server: {}", stderr(&o));
    assert!(
        stderr(&o).contains("local PostgreSQL: removed (no server of this checkout was running)"),
        "the copy's teardown stopped nothing, and says so: {}",
        stderr(&o)
    );
    assert!(
        a.state_dir().join("local/server/data/PG_VERSION").is_file(),
        "teardown in the copy deleted the original's data"
    );

    let url_b = b.setup("notification");
    assert_ne!(url_a, url_b, "setup in the copy reused the original's server");
    assert!(serves_from(&url_b, &b.root), "the copy's server runs from the copy");
    assert!(serves_from(&url_a, &a.root), "the original's server still runs");

    let o = b.teardown();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(data_dir_of(&url_b).is_none(), "the copy's own server is stopped");
    assert!(serves_from(&url_a, &a.root));
    let o = a.teardown();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(data_dir_of(&url_a).is_none());
}

#[test]
fn a_copy_made_while_the_server_runs_starts_its_own_after_a_setup_there() {
    // The copied postmaster.pid names the original's pid: it must never be signalled, and the
    // copy's setup must not be blocked by it.
    let tmp = TempDir::new("copy-run");
    let a = Checkout::new(&tmp.path().join("a"));
    let url_a = a.setup("audit");
    cp_a(&a.root, &tmp.path().join("b"));
    let b = Checkout::at(&tmp.path().join("b"));
    assert!(b.state_dir().join("local/server/data/postmaster.pid").is_file(), "the copy holds a postmaster.pid");
    let url_b = b.setup("audit");
    assert!(serves_from(&url_b, &b.root));
    assert!(serves_from(&url_a, &a.root));
}

#[test]
fn worktrees_sharing_a_target_dir_keep_their_own_state() {
    let tmp = TempDir::new("shared");
    let shared = tmp.path().join("target");
    let mut a = Checkout::new(&tmp.path().join("a"));
    let mut b = Checkout::new(&tmp.path().join("b"));
    for c in [&mut a, &mut b] {
        c.env.push(("CARGO_TARGET_DIR".into(), shared.display().to_string()));
    }
    let url_a = a.setup("workflow");
    let url_b = b.setup("workflow");
    assert_ne!(url_a, url_b, "the second worktree reused the first one's server");
    let o = b.teardown();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(data_dir_of(&url_a).is_some(), "teardown in one worktree stopped the other's server");
    assert!(data_dir_of(&url_b).is_none());
    let o = a.teardown();
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn a_state_file_that_points_elsewhere_is_never_followed() {
    let tmp = TempDir::new("elsewhere");
    let a = Checkout::new(&tmp.path().join("a"));
    let url_a = a.setup("audit");
    // B gets A's state files (not its server folder): a restored cache, a copied target/e2e.
    let b = Checkout::new(&tmp.path().join("b"));
    for f in files_named(&a.state_dir(), &|n| n.ends_with(".json") || n.ends_with(".env")) {
        let rel = f.strip_prefix(a.state_dir()).unwrap();
        if rel.starts_with("local/server") {
            continue;
        }
        let to = b.state_dir().join(rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&f, &to).unwrap();
    }
    let o = b.run_within(&["migrate", "status"], Duration::from_secs(60));
    assert!(!o.status.success(), "migrate status followed a state file made elsewhere: {}", stderr(&o));
    assert!(stderr(&o).contains("was made in"), "{}", stderr(&o));
    let o = b.teardown();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(data_dir_of(&url_a).is_some(), "teardown followed a state file to another checkout's server");
    assert!(a.state_dir().join("local/server/data/PG_VERSION").is_file());
}

#[test]
fn a_binary_reads_the_migrations_of_the_checkout_it_runs_in() {
    let tmp = TempDir::new("migs");
    let b = Checkout::new(&tmp.path().join("b"));
    let manifest = b.root.join("migrations/sets.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, format!("{text}\n[sets.only_here]\nfiles = [\"099_only_here.sql\"]\n")).unwrap();
    std::fs::write(b.root.join("migrations/099_only_here.sql"), "-- +goose Up\nCREATE TABLE only_here (id int);\n")
        .unwrap();
    let o =
        b.run(&["migrate", "plan", "--sets", "only_here", "--database-url", "postgres://nobody:x@127.0.0.1:1/none"]);
    assert!(!stderr(&o).contains("unknown set"), "the binary read another checkout's migrations: {}", stderr(&o));
    assert!(
        stderr(&o).contains("connecting to 127.0.0.1:1 (postgres://nobody:***@127.0.0.1:1/none)"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn the_use_them_line_pastes_safely_and_teardown_leaves_no_lock() {
    let tmp = TempDir::new("quote");
    let dir = tmp.path().join("my dir $(touch pwned) it's");
    let a = Checkout::new(&dir);
    let o = a.run(&["e2e-setup", "--backend", "local", "--sets", "workflow"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let line = stderr(&o)
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("use them:").map(|s| s.trim().to_string()))
        .unwrap_or_else(|| panic!("no `use them` line: {}", stderr(&o)));
    let load = line.strip_suffix("psql \"$DATABASE_URL\"").expect("the line ends with psql").trim_end();
    let script = format!("{load} printf '%s' \"$DATABASE_URL\"");
    let out = std::process::Command::new("sh").arg("-c").arg(&script).current_dir(tmp.path()).output().unwrap();
    assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
    let url = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(url.starts_with("postgres://e2e:"), "{script} gave {url:?}");
    assert_eq!(query_text(&url, "SELECT current_database()::text").as_deref(), Some("e2e"));
    assert!(
        files_named(tmp.path(), &|n| n == "pwned").is_empty(),
        "pasting the line ran a command from the path: {line}"
    );
    let o = a.teardown();
    assert!(o.status.success(), "{}", stderr(&o));
    let locks = files_named(&a.root.join("target"), &|n| n.ends_with(".lock"));
    assert!(locks.is_empty(), "teardown left {locks:?}");
}
