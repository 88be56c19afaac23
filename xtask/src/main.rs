//! `cargo xtask`: end-to-end database setup, migrations, partitions, benchmarks, a doctor and
//! shell completions.
//!
//! `main` parses flags, sets up logging to stderr and dispatches; each command is a module whose
//! code is a method on its flags struct. Errors go to stderr and make the exit code non-zero.

mod bench;
mod completions;
mod doctor;
mod flags;
mod follow;
mod kind;
mod migrate;
mod migrate_new;
mod partitions;
mod psql;
mod setup;
mod status;
mod target;
mod teardown;
#[cfg(test)]
mod workflows;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = flags::Xtask::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("E2E_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match args.cmd {
            flags::Cmd::E2eSetup(f) => f.run().await,
            flags::Cmd::E2eTeardown(f) => f.run().await,
            flags::Cmd::Migrate(f) => f.run().await,
            flags::Cmd::Partitions(f) => f.run().await,
            flags::Cmd::Psql(f) => f.run().await,
            flags::Cmd::PortForward(f) => f.run().await,
            flags::Cmd::Status(f) => f.run().await,
            flags::Cmd::Bench(f) => f.run().await,
            flags::Cmd::Doctor(f) => f.run(),
            flags::Cmd::Completions(f) => f.run(),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // a program run on the user's behalf (psql) said so itself
        Err(e) if e.downcast_ref::<psql::ExitWith>().is_some() => {
            ExitCode::from(e.downcast_ref::<psql::ExitWith>().map_or(1, |x| x.0))
        }
        Err(e) => {
            eprintln!("error: {}", render_error(&e));
            if let Some(h) = hint(&e) {
                eprintln!("  hint: {h}");
            }
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, `outer: inner`. The library's errors already spell out their cause
/// (with SQLSTATE, detail and hint), so the chain stops at the first of them; a cause that the
/// message before it already contains is left out too.
fn render_error(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
        if cause.downcast_ref::<e2e_migrations::Error>().is_some() {
            break;
        }
    }
    out
}

/// What to do next, for the lifecycle's errors (the library names no command or flag).
fn hint(e: &anyhow::Error) -> Option<&'static str> {
    use e2e_migrations::lifecycle::LifecycleError as L;
    let l = e.chain().find_map(|c| match c.downcast_ref::<e2e_migrations::Error>() {
        Some(e2e_migrations::Error::Lifecycle(l)) => Some(l),
        _ => c.downcast_ref::<L>(),
    })?;
    Some(match l {
        L::NotSetUp { .. } => "set up first: `cargo xtask e2e-setup [--sets SET,...]`; or name a server: --database-url URL",
        L::ServerDown { .. } => "`cargo xtask e2e-setup` starts it again (read-only commands never start a server)",
        L::SetupIncomplete { .. } => "`cargo xtask e2e-setup` completes it (read-only commands never do)",
        L::ForeignRecord { .. } => {
            "this checkout has no setup of its own: `cargo xtask e2e-setup` makes one (the other checkout's is left alone)"
        }
        L::UnreadableRecord { .. } | L::IncompleteRecord { .. } => {
            "`cargo xtask e2e-teardown` removes what is provably this checkout's; `cargo xtask e2e-setup` then starts over"
        }
        L::NotOurs { .. } => "it is left alone; if it is a server you started yourself on this folder, stop it yourself",
        L::NoServerBinaries { .. } | L::BadBindir { .. } => {
            "or use a server you have: --database-url URL, or --backend kind"
        }
        _ => return None,
    })
}
