//! `cargo xtask`: end-to-end database setup, migrations, partitions, benchmarks, a doctor and
//! shell completions.
//!
//! `main` parses flags, sets up logging to stderr and dispatches; each command is a module whose
//! code is a method on its flags struct. Errors go to stderr and make the exit code non-zero.

mod bench;
mod completions;
mod doctor;
mod flags;
mod kind;
mod migrate;
mod migrate_new;
mod partitions;
mod setup;
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
            flags::Cmd::Bench(f) => f.run().await,
            flags::Cmd::Doctor(f) => f.run(),
            flags::Cmd::Completions(f) => f.run(),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", render_error(&e));
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
