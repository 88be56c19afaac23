//! `leftover-dbs record FILE` before the test command, `leftover-dbs check FILE` after it: fails,
//! naming them, when the run left databases behind on this checkout's server (see
//! `e2e_test_support::leftovers`). `.ci/run` runs it around the README's test command.

use std::process::ExitCode;

use e2e_test_support::leftovers::{comparable, left_behind, snapshot, Snapshot};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["record", file] => record(file),
        ["check", file] => check(file),
        _ => Err("usage: leftover-dbs record FILE | leftover-dbs check FILE".to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn record(file: &str) -> Result<(), String> {
    let now = snapshot()?;
    let json = serde_json::to_string_pretty(&now).expect("a snapshot serialises");
    std::fs::write(file, json).map_err(|e| format!("writing {file}: {e}"))?;
    eprintln!("leftover-dbs: {} databases on {} before the tests", now.databases.len(), server(&now));
    Ok(())
}

fn check(file: &str) -> Result<(), String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("reading {file}: {e}"))?;
    let before: Snapshot = serde_json::from_str(&text).map_err(|e| format!("{file}: {e}"))?;
    let after = snapshot()?;
    comparable(&before, &after)?;
    let left = left_behind(&before, &after);
    eprintln!(
        "leftover-dbs: before the tests {} databases ({}), after them {} ({}); left behind: {}",
        before.databases.len(),
        server(&before),
        after.databases.len(),
        server(&after),
        left.len()
    );
    if left.is_empty() {
        return Ok(());
    }
    Err(format!(
        "the tests left {} database(s) behind on {}:\n  {}\na fixture was not dropped (a test database, a FreshDb) or a test made a database \
         of its own: use e2e_test_support::FreshDb or e2e_migrations::TestDatabase, which drop theirs",
        left.len(),
        server(&after),
        left.join("\n  ")
    ))
}

fn server(s: &Snapshot) -> &str {
    s.server.as_deref().unwrap_or("no server")
}
