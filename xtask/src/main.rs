//! `cargo xtask`: end-to-end database setup, migrations, partitions, benchmarks, a doctor and
//! shell completions.
//!
//! `main` parses flags, sets up progress and logging on stderr ([`progress`]) and dispatches; each command is a module whose
//! code is a method on its flags struct. Errors go to stderr and make the exit code non-zero.

mod bench;
mod cli_util;
mod completions;
mod doctor;
mod flags;
mod follow;
mod hints;
mod kind;
mod migrate;
mod migrate_new;
mod partitions;
mod progress;
mod psql;
mod setup;
mod status;
mod teardown;
#[cfg(test)]
mod workflows;

use std::process::ExitCode;

use clap::Parser;

/// What is logged without E2E_LOG: our own crates' info, the dependencies' warnings. Not
/// kube-rs's request tracing (its `TraceLayer` logs an ERROR for every failed request, and
/// each of those is also returned to us as the error we report: it would be said twice).
const DEFAULT_LOG: &str = "warn,xtask=info,e2e_migrations=info,kube_client::client::builder=off";

fn main() -> ExitCode {
    let args = flags::Xtask::parse();
    let mode = progress::init(&progress::Facts::of_this_process(args.quiet));
    // E2E_LOG chooses what is logged ([`DEFAULT_LOG`] without it); --quiet, asked for on this
    // command line, wins over it: errors only
    let filter = match mode {
        progress::Mode::Quiet => tracing_subscriber::EnvFilter::new("error"),
        _ => tracing_subscriber::EnvFilter::try_from_env("E2E_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG)),
    };
    tracing_subscriber::fmt()
        .with_writer(progress::LogWriter)
        .with_target(false)
        .without_time()
        .with_ansi(mode == progress::Mode::Live)
        .with_env_filter(filter)
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
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, `outer: cause: root cause`, and what gets past it (a flag, a
/// command), if something does. Each message of the chain says one thing (the library's errors leave their cause to the
/// chain, and a database error says its SQLSTATE, detail and hint itself), so a plain walk shows
/// each once.
fn render_error(e: &anyhow::Error) -> String {
    let mut out = e2e_migrations::error::report(e.as_ref());
    if let Some(hint) = hints::hint(e) {
        out.push_str("\nhint: ");
        out.push_str(&hint);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use e2e_migrations::error::SqlFailure;
    use e2e_migrations::Error;

    #[test]
    fn a_migration_error_renders_its_server_error_once() {
        let failure = SqlFailure {
            file: "m/001_a.sql".into(),
            line: 2,
            column: Some(8),
            sqlstate: "P0001".into(),
            message: "boom".into(),
            detail: Some("the detail".into()),
            hint: Some("the hint".into()),
        };
        let e =
            Error::Migration { failure: Box::new(failure), applied: vec!["000_x.sql".into()], partial_statements: 0 };
        let e = anyhow::Error::from(e).context("applying the migrations");
        assert_eq!(
            render_error(&e),
            "applying the migrations: migration failed: m/001_a.sql:2:8: boom (SQLSTATE P0001)\n  detail: the \
             detail\n  hint: the hint\n  applied before the failure: 000_x.sql"
        );
    }

    #[test]
    fn each_cause_is_said_once_and_the_flag_hint_last() {
        let core = e2e_migrations::core::Error::Drift { files: vec!["m/001_a.sql".into()] };
        let e = anyhow::Error::from(Error::from(core)).context("migrating");
        let text = render_error(&e);
        assert_eq!(text.matches("m/001_a.sql").count(), 1, "{text}");
        assert!(text.starts_with("migrating: applied migration changed"), "{text}");
        assert!(text.ends_with("\nhint: pass --accept-drift to keep the applied version and record the new checksum"));
    }
}
