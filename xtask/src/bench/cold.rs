//! Bench case `setup_cold_local`: a whole `e2e-setup --backend local` with no server running
//! and the server cache warm, against the baseline `initdb_start_apply`: the same setup with the
//! cache off (initdb, server start, applying the same sets and rolling their partitions).

use std::path::Path;
use std::process::Command;

use anyhow::Result;

use super::{median, time_process, CaseResult, Ctx, Goal};

/// The sets both sides apply: the whole schema.
const SETS: &str = "audit,workflow,notification";

fn xtask(ctx: &Ctx, state: &Path, cache: Option<&Path>, args: &[&str]) -> Command {
    let mut c = Command::new(&ctx.xtask);
    c.args(args).current_dir(&ctx.root).env("E2E_STATE_DIR", state).env("E2E_LOG", "warn").env_remove("DATABASE_URL");
    match cache {
        Some(dir) => c.env("E2E_CACHE_DIR", dir).env_remove("E2E_CACHE"),
        None => c.env("E2E_CACHE", "off"),
    };
    c
}

fn setup(ctx: &Ctx, state: &Path, cache: Option<&Path>) -> Command {
    xtask(ctx, state, cache, &["e2e-setup", "--backend", "local", "--sets", SETS])
}

fn teardown(ctx: &Ctx, state: &Path) -> Result<()> {
    time_process(&mut xtask(ctx, state, None, &["e2e-teardown", "--backend", "local"]))?;
    Ok(())
}

/// `setup_cold_local` against `initdb_start_apply`, goal ratio at most 0.5.
pub(crate) async fn setup_cold_local(ctx: &Ctx) -> Result<Vec<CaseResult>> {
    let state = ctx.state_dir.join("cold");
    let cache = ctx.state_dir.join("cold-cache");
    let _ = std::fs::remove_dir_all(&cache);
    // Warm the cache (untimed): the first setup makes the entry.
    time_process(&mut setup(ctx, &state, Some(&cache)))?;
    teardown(ctx, &state)?;
    let (mut ours, mut baseline) = (Vec::new(), Vec::new());
    let result = (|| -> Result<()> {
        for _ in 0..ctx.runs {
            ours.push(time_process(&mut setup(ctx, &state, Some(&cache)))?);
            teardown(ctx, &state)?;
            baseline.push(time_process(&mut setup(ctx, &state, None))?);
            teardown(ctx, &state)?;
        }
        Ok(())
    })();
    let _ = teardown(ctx, &state);
    let _ = std::fs::remove_dir_all(&cache);
    result?;
    Ok(vec![CaseResult::pair(
        "setup_cold_local",
        "initdb_start_apply",
        median(ours),
        median(baseline),
        Goal::RatioAtMost(0.5),
    )])
}
