//! Bench cases for isolated test databases: `test_db` against `create_and_migrate`, and
//! `test_db_pool`.
//!
//! Unlike the migration cases, these time a library call in-process (what a test pays inside its
//! own process), not a whole process: `e2e_migrations::testdb` on the project's full schema (the
//! set `all`, partitions rolled), on the bench's own server.

use std::time::Instant;

use anyhow::{Context, Result};
use e2e_migrations::ident::quote;
use e2e_migrations::testdb::Pool;
use e2e_migrations::{apply, Options, Project};

use super::{median, CaseResult, Ctx, Goal};

/// The project's full schema.
const SETS: &[&str] = &["all"];

/// `test_db`: a test's database ready (cloned from the warm template; no pool), median, against
/// `create_and_migrate` (an empty database plus applying the sets and rolling the partitions),
/// goal ratio at most 0.5; and `test_db_pool`: taking a ready database from a warm pool, goal
/// under 10 ms.
pub(crate) async fn test_db(ctx: &Ctx) -> Result<Vec<CaseResult>> {
    let project = Project::load(&ctx.root.join("migrations")).context("loading the project's migrations")?;
    let server = ctx.server.url();
    let now = chrono::Utc::now();

    // The template is built once per fingerprint; build it before timing (a warm run).
    let clones: Pool = e2e_migrations::TestDatabase::builder(SETS)
        .project(project.clone())
        .server_url(server.clone())
        .now(now)
        .ready(0)
        .pool()
        .await
        .context("building the test template")?;

    let admin = e2e_migrations::db::connect(&ctx.server.url_for("postgres")).await?;
    let mut ours = Vec::with_capacity(ctx.runs);
    let mut baseline = Vec::with_capacity(ctx.runs);
    let all: Vec<String> = SETS.iter().map(|s| s.to_string()).collect();
    for i in 0..ctx.runs {
        let start = Instant::now();
        let db = clones.get().await.context("test_db: cloning the template")?;
        ours.push(start.elapsed().as_secs_f64());
        db.close().await.context("test_db: dropping the clone")?;

        let name = format!("bench_create_and_migrate_{i}");
        admin.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote(&name))).await?;
        let start = Instant::now();
        admin
            .batch_execute(&format!("CREATE DATABASE {}", quote(&name)))
            .await
            .context("create_and_migrate: CREATE DATABASE")?;
        let mut client = e2e_migrations::db::connect(&ctx.server.url_for(&name)).await?;
        apply::migrate_and_roll(&mut client, &project, &all, &Options::default(), now)
            .await
            .context("create_and_migrate: applying")?;
        baseline.push(start.elapsed().as_secs_f64());
        drop(client);
        admin.batch_execute(&format!("DROP DATABASE {} WITH (FORCE)", quote(&name))).await?;
    }
    let mut results =
        vec![CaseResult::pair("test_db", "create_and_migrate", median(ours), median(baseline), Goal::RatioAtMost(0.5))];

    // A warm pool: wait (untimed) until it is full again, then time taking one.
    let pool = e2e_migrations::TestDatabase::builder(SETS)
        .project(project)
        .server_url(server)
        .now(now)
        .ready(2)
        .pool()
        .await?;
    let mut taken = Vec::with_capacity(ctx.runs);
    for _ in 0..ctx.runs {
        pool.warm().await.context("test_db_pool: filling the pool")?;
        let start = Instant::now();
        let db = pool.get().await.context("test_db_pool: taking a ready database")?;
        taken.push(start.elapsed().as_secs_f64());
        db.close().await.context("test_db_pool: dropping it")?;
    }
    results.push(CaseResult::alone("test_db_pool", median(taken), Goal::UnderSeconds(0.010)));
    Ok(results)
}
