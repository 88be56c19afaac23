//! `cargo xtask bench`: ours against the old way, measured side by side in one run.
//!
//! Every case runs ours and its baseline alternately, `--runs` times each, on one throwaway
//! local server of the bench's own (its state under `target/e2e-bench`, torn down at the end),
//! and reports medians and the ratio ours / baseline. Migration cases time whole processes: the
//! release-built xtask binary against `psql`, as the services' setup ran it. `setup_cold_local`
//! times whole `e2e-setup` processes with no server running, with the server cache against
//! without it.

mod cold;
mod migrate;
mod partitions;
mod test_db;

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use e2e_migrations::ident::quote;
use e2e_migrations::lifecycle::local::{self, LocalServer, StartOptions};
use e2e_migrations::lifecycle::Workspace;
use serde::Serialize;
use xshell::{cmd, Shell};

use crate::flags::{Bench, Output};
use crate::progress::say;

/// What every case gets.
pub(crate) struct Ctx {
    /// The release-built xtask binary.
    pub xtask: PathBuf,
    /// The bench's own local server.
    pub server: LocalServer,
    /// The workspace the bench runs in.
    pub root: PathBuf,
    /// Its state folder (pass as `E2E_STATE_DIR` to the xtask binary).
    pub state_dir: PathBuf,
    /// A scratch folder for generated files.
    pub work: PathBuf,
    /// `psql`.
    pub psql: PathBuf,
    /// Repetitions per measurement.
    pub runs: usize,
}

/// One measured pair, as `--output json` prints it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct CaseResult {
    /// The case.
    pub case: String,
    /// The baseline's name, or null.
    pub baseline: Option<String>,
    /// Median seconds of ours.
    pub ours_s: f64,
    /// Median seconds of the baseline.
    pub baseline_s: Option<f64>,
    /// ours / baseline.
    pub ratio: Option<f64>,
    /// The goal, for the table (not in the JSON).
    #[serde(skip)]
    pub goal: Goal,
}

/// A case's target.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Goal {
    /// ratio at most this.
    RatioAtMost(f64),
    /// ours under this many seconds.
    UnderSeconds(f64),
}

impl Goal {
    fn met(self, r: &CaseResult) -> bool {
        match self {
            Goal::RatioAtMost(x) => r.ratio.map(|v| v <= x).unwrap_or(false),
            Goal::UnderSeconds(s) => r.ours_s < s,
        }
    }
    fn describe(self) -> String {
        match self {
            Goal::RatioAtMost(x) => format!("ratio <= {x}"),
            Goal::UnderSeconds(s) => format!("< {:.0} ms", s * 1000.0),
        }
    }
}

impl CaseResult {
    /// A result with a baseline.
    pub fn pair(case: &str, baseline: &str, ours: f64, base: f64, goal: Goal) -> CaseResult {
        CaseResult {
            case: case.to_string(),
            baseline: Some(baseline.to_string()),
            ours_s: ours,
            baseline_s: Some(base),
            ratio: Some(ours / base),
            goal,
        }
    }

    /// A result without a baseline.
    pub fn alone(case: &str, ours: f64, goal: Goal) -> CaseResult {
        CaseResult { case: case.to_string(), baseline: None, ours_s: ours, baseline_s: None, ratio: None, goal }
    }
}

/// The median of some samples (seconds).
pub(crate) fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    let n = xs.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// Runs a process to completion, failing on a non-zero exit; returns its wall time in seconds.
pub(crate) fn time_process(cmd: &mut Command) -> Result<f64> {
    let start = Instant::now();
    let out = cmd.stdin(std::process::Stdio::null()).output().with_context(|| format!("running {cmd:?}"))?;
    let t = start.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!("{cmd:?} failed ({}):\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    }
    Ok(t)
}

/// A fresh empty database `name` on the bench server (replacing one of that name: the cases
/// reuse their names run after run, and psql reaches them by name); returns its URL. The bench's
/// server is its own and is removed at the end, so nothing is left behind.
pub(crate) async fn fresh_db(ctx: &Ctx, name: &str) -> Result<String> {
    let admin = e2e_migrations::db::connect(&ctx.server.url_for("postgres")).await?;
    admin.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote(name))).await?;
    admin.batch_execute(&format!("CREATE DATABASE {}", quote(name))).await?;
    Ok(ctx.server.url_for(name))
}

const CASES: &[&str] = &["apply_all", "apply_200", "setup_warm", "setup_cold_local", "partitions_120", "test_db"];

impl Bench {
    pub(crate) async fn run(self) -> Result<()> {
        let wanted: Vec<String> = match &self.cases {
            Some(c) => c.split(',').map(|s| s.trim().to_string()).collect(),
            None => CASES.iter().map(|s| s.to_string()).collect(),
        };
        for w in &wanted {
            if !CASES.contains(&w.as_str()) {
                bail!("--cases: unknown case {w:?}; known: {}", CASES.join(", "));
            }
        }
        if self.runs == 0 {
            bail!("--runs must be at least 1");
        }
        let sh = Shell::new()?;
        let ws = Workspace::current()?;
        let root = ws.root.clone();
        sh.change_dir(&root);
        say!("building the release xtask binary (ours is timed as a whole process)...");
        cmd!(sh, "cargo build --release --quiet --package xtask --bin xtask").run()?;
        let state_dir = ws.target_dir.join("e2e-bench");
        let work = state_dir.join("work");
        std::fs::create_dir_all(&work)?;
        let bench_ws = Workspace { state_dir: state_dir.clone(), cache_dir: None, ..ws.clone() };
        let server = local::ensure_running(&bench_ws, &StartOptions::default()).await?;
        let psql = which("psql").context("psql is needed for the baselines (apt-get install postgresql-client)")?;
        let ctx = Ctx {
            xtask: ws.target_dir.join("release/xtask"),
            server,
            root: root.clone(),
            state_dir: state_dir.clone(),
            work,
            psql,
            runs: self.runs,
        };
        say!("bench server on 127.0.0.1:{}; {} runs per measurement (medians)", ctx.server.local.port, ctx.runs);

        let mut results = Vec::new();
        let outcome: Result<()> = async {
            for case in &wanted {
                say!("case {case}...");
                match case.as_str() {
                    "apply_all" => results.extend(migrate::apply_all(&ctx).await?),
                    "apply_200" => results.extend(migrate::apply_200(&ctx).await?),
                    "setup_warm" => results.extend(migrate::setup_warm(&ctx).await?),
                    "setup_cold_local" => results.extend(cold::setup_cold_local(&ctx).await?),
                    "partitions_120" => results.extend(partitions::partitions_120(&ctx).await?),
                    "test_db" => results.extend(test_db::test_db(&ctx).await?),
                    _ => unreachable!("checked above"),
                }
            }
            Ok(())
        }
        .await;
        let stopped = local::teardown(&bench_ws).await;
        outcome?;
        stopped.context("stopping the bench server")?;

        match self.output {
            Output::Json => println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "cases": results }))?),
            Output::Text => print_table(&results),
        }
        Ok(())
    }
}

fn print_table(results: &[CaseResult]) {
    println!("{:<16} {:<20} {:>10} {:>12} {:>7}  {:<14} met", "case", "baseline", "ours", "baseline", "ratio", "goal");
    for r in results {
        let ms = |s: f64| format!("{:.1} ms", s * 1000.0);
        println!(
            "{:<16} {:<20} {:>10} {:>12} {:>7}  {:<14} {}",
            r.case,
            r.baseline.as_deref().unwrap_or("-"),
            ms(r.ours_s),
            r.baseline_s.map(ms).unwrap_or_else(|| "-".into()),
            r.ratio.map(|x| format!("{x:.2}")).unwrap_or_else(|| "-".into()),
            r.goal.describe(),
            if r.goal.met(r) { "yes" } else { "NO" }
        );
    }
}

fn which(bin: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).map(|d| d.join(bin)).find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    #[test]
    fn json_items_have_the_documented_keys() {
        let r = CaseResult::pair("apply_all", "psql_per_file", 1.0, 4.0, Goal::RatioAtMost(0.5));
        let v = serde_json::to_value(&r).unwrap();
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(keys, ["baseline", "baseline_s", "case", "ours_s", "ratio"]);
        assert_eq!(v["ratio"], 0.25);
        assert!(Goal::RatioAtMost(0.5).met(&r));
        let alone = serde_json::to_value(CaseResult::alone("setup_warm", 0.05, Goal::UnderSeconds(0.1))).unwrap();
        assert!(alone["baseline"].is_null() && alone["ratio"].is_null());
    }
}
