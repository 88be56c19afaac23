//! Bench cases of issue 2: applying migrations (ours vs psql) and a warm `e2e-setup`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Result;
use e2e_migrations::Project;

use super::{fresh_db, median, time_process, CaseResult, Ctx, Goal};

/// The Up sections of a folder's migrations, in version order, as plain SQL files for psql
/// (psql would also run the Down sections of a goose file).
fn up_only_files(project: &Project, out: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out)?;
    let mut files = Vec::new();
    for m in &project.folder.migrations {
        let p = out.join(&m.name);
        std::fs::write(&p, &m.sql.up_text)?;
        files.push(p);
    }
    Ok(files)
}

fn psql(ctx: &Ctx, db: &str) -> Command {
    let mut c = Command::new(&ctx.psql);
    c.args([
        "-X",
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        "-h",
        "127.0.0.1",
        "-p",
        &ctx.server.local.port.to_string(),
        "-U",
        &ctx.server.local.user,
        "-d",
        db,
    ])
    .env("PGPASSWORD", &ctx.server.local.password)
    .stdout(std::process::Stdio::null());
    c
}

fn ours(ctx: &Ctx, url: &str, dir: &Path) -> Command {
    let mut c = Command::new(&ctx.xtask);
    c.args(["migrate", "up", "--migrations-dir"])
        .arg(dir)
        .env("DATABASE_URL", url)
        .env("E2E_STATE_DIR", &ctx.state_dir)
        .env("E2E_LOG", "warn");
    c
}

/// Times ours and each baseline alternately on fresh databases; returns medians.
async fn measure(ctx: &Ctx, dir: &Path, files: &[PathBuf], one_file: Option<&Path>) -> Result<(f64, f64, Option<f64>)> {
    let (mut o, mut per_file, mut one) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ctx.runs {
        let url = fresh_db(ctx, "bench_ours").await?;
        o.push(time_process(&mut ours(ctx, &url, dir))?);

        fresh_db(ctx, "bench_base").await?;
        let mut t = 0.0;
        for f in files {
            t += time_process(psql(ctx, "bench_base").arg("-f").arg(f))?;
        }
        per_file.push(t);

        if let Some(f) = one_file {
            fresh_db(ctx, "bench_base").await?;
            one.push(time_process(psql(ctx, "bench_base").arg("-f").arg(f))?);
        }
    }
    Ok((median(o), median(per_file), one_file.map(|_| median(one))))
}

/// `apply_all`: the project's own folder onto an empty database, against one psql per file.
pub(crate) async fn apply_all(ctx: &Ctx) -> Result<Vec<CaseResult>> {
    let dir = ctx.root.join("migrations");
    let project = Project::load(&dir)?;
    let files = up_only_files(&project, &ctx.work.join("apply_all_up"))?;
    let (o, per_file, _) = measure(ctx, &dir, &files, None).await?;
    Ok(vec![CaseResult::pair("apply_all", "psql_per_file", o, per_file, Goal::RatioAtMost(0.5))])
}

/// A deterministic goose folder of `n` migrations, the size of a long-lived project: each a
/// table with indexes, some rows and a DO block; every tenth a function in StatementBegin/End.
pub(crate) fn generate(n: usize) -> Vec<(String, String)> {
    (1..=n)
        .map(|i| {
            let mut up = format!(
                "CREATE TABLE bench_t{i} (\n    id bigserial PRIMARY KEY,\n    name text NOT NULL,\n    value integer NOT NULL DEFAULT 0,\n    payload jsonb,\n    created_at timestamptz NOT NULL DEFAULT now()\n);\n\
                 CREATE INDEX bench_t{i}_name ON bench_t{i} (name);\n\
                 CREATE INDEX bench_t{i}_value ON bench_t{i} (value, created_at);\n\
                 INSERT INTO bench_t{i} (name, value, payload)\n    SELECT 'row ' || g, g % 97, jsonb_build_object('g', g) FROM generate_series(1, 50) AS g;\n\
                 DO $$ BEGIN IF (SELECT count(*) FROM bench_t{i}) <> 50 THEN RAISE EXCEPTION 'bench_t{i}: wrong row count'; END IF; END $$;\n"
            );
            if i % 10 == 0 {
                up.push_str(&format!(
                    "-- +goose StatementBegin\nCREATE FUNCTION bench_f{i}(x integer) RETURNS integer AS $$\nBEGIN\n    RETURN x + {i};\nEND;\n$$ LANGUAGE plpgsql;\n-- +goose StatementEnd\n"
                ));
            }
            let down = if i % 10 == 0 {
                format!("DROP FUNCTION bench_f{i}(integer);\nDROP TABLE bench_t{i};\n")
            } else {
                format!("DROP TABLE bench_t{i};\n")
            };
            (format!("{i:05}_bench_{i}.sql"), format!("-- +goose Up\n{up}\n-- +goose Down\n{down}"))
        })
        .collect()
}

/// `apply_200`: 200 generated migrations, against psql in one session and psql per file.
pub(crate) async fn apply_200(ctx: &Ctx) -> Result<Vec<CaseResult>> {
    let dir = ctx.work.join("apply_200");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    for (name, text) in generate(200) {
        std::fs::write(dir.join(name), text)?;
    }
    let project = Project::load(&dir)?;
    let files = up_only_files(&project, &ctx.work.join("apply_200_up"))?;
    let one = ctx.work.join("apply_200_one_session.sql");
    std::fs::write(
        &one,
        project.folder.migrations.iter().map(|m| m.sql.up_text.as_str()).collect::<Vec<_>>().join("\n"),
    )?;
    let (o, per_file, one_s) = measure(ctx, &dir, &files, Some(&one)).await?;
    Ok(vec![
        CaseResult::pair("apply_200", "psql_one_session", o, one_s.expect("measured"), Goal::RatioAtMost(1.15)),
        CaseResult::pair("apply_200", "psql_per_file", o, per_file, Goal::RatioAtMost(0.5)),
    ])
}

/// `setup_warm`: `e2e-setup` with the server up and everything applied.
pub(crate) async fn setup_warm(ctx: &Ctx) -> Result<Vec<CaseResult>> {
    let setup = || {
        let mut c = Command::new(&ctx.xtask);
        c.args(["e2e-setup", "--backend", "local"])
            .env("E2E_STATE_DIR", &ctx.state_dir)
            .env("E2E_LOG", "warn")
            .env_remove("DATABASE_URL");
        c
    };
    time_process(&mut setup())?; // warm: everything applied
    let mut xs = Vec::new();
    for _ in 0..ctx.runs {
        xs.push(time_process(&mut setup())?);
    }
    Ok(vec![CaseResult::alone("setup_warm", median(xs), Goal::UnderSeconds(0.1))])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_folder_is_valid_goose_without_warnings() {
        let files = generate(20);
        assert_eq!(files.len(), 20);
        assert_eq!(generate(20), files, "deterministic");
        let folder = e2e_migrations::source::parse_folder(Path::new("g"), files, &|_| None).unwrap();
        assert!(folder.warnings.is_empty(), "{:?}", folder.warnings);
        assert_eq!(folder.migrations[9].sql.up.iter().filter(|s| s.block).count(), 1);
        assert_eq!(folder.migrations[0].sql.up.len(), 5);
    }
}
