//! A test hook: `E2E_FAULT_AT=<step>` makes setup die of SIGKILL at that step, as a killed
//! terminal or CI job would, so that tests can check that the next setup completes or cleanly
//! redoes the work. Nothing else reads it; unset, it costs one lookup. It stays in every build
//! (not behind a cargo feature): the tests run the same binary `cargo xtask` runs, and a feature
//! on for tests only would rebuild it between the two.
//!
//! What dies: when this process leads its process group (the tests start it so), the whole group,
//! as the terminal's job would, children in it included; otherwise (run from a shell without job
//! control, or a harness, whose group it shares) only this process and the children it names,
//! never the processes it shares a group with.
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

/// Kills this process with SIGKILL (and its group, when it leads one) when the hook is set for
/// `step`.
pub fn fault_point(step: FaultStep) {
    fault_point_with(step, &[]);
}

/// As [`fault_point`], also killing `children` (this process's own, running at that step) when
/// this process does not lead its group.
pub(crate) fn fault_point_with(step: FaultStep, children: &[u32]) {
    use nix::sys::signal::{kill, killpg, Signal};
    use nix::unistd::{getpgrp, getpid, Pid};
    if !armed(step) {
        return;
    }
    if getpgrp() == getpid() {
        eprintln!("{FAULT_ENV}={}: killing this process group (a test hook)", step.name());
        let _ = killpg(getpgrp(), Signal::SIGKILL);
    } else {
        eprintln!("{FAULT_ENV}={}: killing this process (a test hook)", step.name());
        for &child in children {
            if let Ok(pid) = i32::try_from(child) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        let _ = kill(getpid(), Signal::SIGKILL);
    }
    // SIGKILL is not delivered synchronously everywhere: never go on past the step.
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}
