//! `cargo xtask doctor`: whether this machine can run each backend, and what to install or
//! start where it cannot. It only looks: it starts, writes and changes nothing.
//!
//! - [`probe`]: the facts (binaries, engines, kubeconfig, disk, earlier setup), thinly;
//! - [`report`]: the decisions and install lines, pure and tested.
//!
//! The report goes to stdout (text or `--output json`); the exit code is 0 when the local
//! default can run here, 1 otherwise.

pub(crate) mod probe;
pub(crate) mod report;

use anyhow::{bail, Result};

use self::report::{Report, Status};
use crate::flags::{Doctor, Output};

/// The report as text (pure).
pub(crate) fn render_text(r: &Report) -> String {
    let mut out = format!("platform: {}\n\n", r.platform);
    let width = r.checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    for c in &r.checks {
        let status = match c.status {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Missing => "missing",
            Status::Info => "info",
        };
        out.push_str(&format!("  {status:<8} {:<width$}  {}\n", c.name, c.detail));
        if let Some(fix) = &c.fix {
            out.push_str(&format!("  {:<8} {:<width$}  fix: {fix}\n", "", ""));
        }
    }
    out.push_str("\nbackends:\n");
    for v in &r.backends {
        let ready = if v.ready { "ready" } else { "not ready" };
        out.push_str(&format!("  {:<5}  {ready:<9}  {}\n", v.backend, v.why));
    }
    out.push_str(&format!("\ne2e-setup would use: {}\n", r.auto));
    out
}

impl Doctor {
    pub(crate) fn run(self) -> Result<()> {
        let facts = probe::probe();
        let report = report::report(&facts);
        match self.output {
            Output::Json => {
                let mut value = serde_json::to_value(&report)?;
                value["local_ready"] = serde_json::Value::Bool(report.local_ready());
                println!("{}", serde_json::to_string_pretty(&value)?);
            }
            Output::Text => print!("{}", render_text(&report)),
        }
        if !report.local_ready() {
            let why = report.backends.iter().find(|v| v.backend == "local").map(|v| v.why.as_str()).unwrap_or("");
            bail!("the local default cannot run on this machine: {why} (see the fixes above)");
        }
        Ok(())
    }
}
