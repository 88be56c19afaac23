//! A test hook: `E2E_FAULT_AT=<step>` makes setup kill its own process group with SIGKILL at
//! that step, as a killed terminal or CI job would, so that tests can check that the next setup
//! completes or cleanly redoes the work. Nothing else reads it; unset, it costs one lookup.
//!
//! Steps: `initdb` (while initdb runs), `start` (the server started, nothing done on it yet),
//! `database` (the test database made, the record not yet updated), `migrations` (migrations
//! applied, partitions not rolled) and `partitions` (partitions rolled, the record not updated).

/// The environment variable.
pub const FAULT_ENV: &str = "E2E_FAULT_AT";

/// A step at which setup can be killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultStep {
    /// While `initdb` runs.
    Initdb,
    /// Right after the server started.
    Start,
    /// Right after the test database was made.
    Database,
    /// Right after the migrations were applied.
    Migrations,
    /// Right after the partitions were rolled.
    Partitions,
}

impl FaultStep {
    /// The name `E2E_FAULT_AT` takes.
    pub fn name(self) -> &'static str {
        match self {
            FaultStep::Initdb => "initdb",
            FaultStep::Start => "start",
            FaultStep::Database => "database",
            FaultStep::Migrations => "migrations",
            FaultStep::Partitions => "partitions",
        }
    }
}

/// Whether the hook is set for `step`.
pub fn armed(step: FaultStep) -> bool {
    std::env::var(FAULT_ENV).is_ok_and(|v| v == step.name())
}

/// Kills this process's group with SIGKILL when the hook is set for `step`.
pub fn fault_point(step: FaultStep) {
    if !armed(step) {
        return;
    }
    eprintln!("{FAULT_ENV}={}: killing this process group (a test hook)", step.name());
    let _ = nix::sys::signal::killpg(nix::unistd::getpgrp(), nix::sys::signal::Signal::SIGKILL);
    // SIGKILL is not delivered synchronously everywhere: never go on past the step.
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}
