//! `cargo xtask e2e-setup`: a database with the requested sets applied and partitions rolled.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use chrono::{DateTime, Utc};
use e2e_migrations::lifecycle::cache::CacheRequest;
use e2e_migrations::lifecycle::fault::{fault_point, FaultStep};
use e2e_migrations::lifecycle::local::{self, LocalServer, StartOptions};
use e2e_migrations::lifecycle::record::{self, shell_quote};
use e2e_migrations::lifecycle::{BackendKind, Phase, Saved, SetupState, Workspace};
use e2e_migrations::testdb::Fingerprint;
use e2e_migrations::{partitions, Project};

use crate::cli_util::{connect, load_project, parse_now, workspace, Step};
use crate::flags::{Backend, EnvFormat, Setup};
use crate::follow::{self, Asked};
use crate::kind;
use crate::progress::say;

/// The cache entry a new local server may start from: keyed by the sets, every selected
/// migration's checksum and statements, the partition specs and the day (the test templates'
/// fingerprint); `None` when the cache is off.
fn cache_request(
    ws: &Workspace,
    project: &Project,
    sets: &[String],
    now: DateTime<Utc>,
) -> Result<Option<CacheRequest>> {
    let Some(dir) = &ws.cache_dir else {
        return Ok(None);
    };
    let fp = Fingerprint::new(project, sets, now)?;
    let label = format!("sets {} as of {}", fp.sets.join(","), fp.date);
    Ok(Some(CacheRequest { dir: dir.clone(), content: fp.hash(), label }))
}

/// Why a kube setup prints no `DATABASE_URL`.
const NO_HOST_PORT: &str = "the server has no host port; test crates reach it through an in-process port-forward \
    from this checkout's state, `cargo xtask psql` opens psql on it, and `cargo xtask port-forward` holds a forward \
    and prints a DATABASE_URL for other tools";

/// The line a warm setup ends with: what it reused and how many migrations it applied (pure).
pub(crate) fn reuse_line(reused: Option<&str>, applied: usize) -> Option<String> {
    reused.map(|what| format!("reused: {what}, {applied} applied"))
}

/// How a shell user reaches a server without a host port (kube), after setup (pure).
pub(crate) fn cluster_hints(st: &SetupState) -> Vec<String> {
    let ns = st.namespace.as_deref().unwrap_or("NAMESPACE");
    let ctx = st.context.as_deref().unwrap_or("CONTEXT");
    let run = st.run_id.as_deref().unwrap_or("RUN_ID");
    let service = e2e_migrations::kube::instance_name(run);
    let secret = e2e_migrations::kube::secret_name(run);
    vec![
        "no host port: the server is reached through a port-forward over the Kubernetes API".to_string(),
        "psql:        cargo xtask psql [-- psql arguments]".to_string(),
        "other tools: cargo xtask port-forward   (holds a forward on a free local port; prints DATABASE_URL)"
            .to_string(),
        "from Rust:   test crates find it through this checkout's state (or KUBECONFIG, E2E_KUBE_CONTEXT, \
         E2E_NAMESPACE and E2E_RUN_ID from --print-env, with e2e_migrations::kube::Server::from_env())"
            .to_string(),
        format!(
            "by hand:     kubectl --context {ctx} --namespace {ns} port-forward service/{service} :5432   \
             (a free local port; user and password: kubectl --context {ctx} --namespace {ns} get secret {secret} \
             -o jsonpath='{{.data.POSTGRES_USER}}' | base64 -d, and .data.POSTGRES_PASSWORD)"
        ),
    ]
}

/// The connection settings as `--print-env` prints them (pure): plain `KEY=value` lines, or
/// `export KEY=value` lines with each value quoted for a POSIX shell. A value holding a line
/// break cannot be a plain line, and is refused.
pub(crate) fn env_lines(pairs: &[(String, String)], format: EnvFormat) -> Result<String> {
    let mut out = String::new();
    for (k, v) in pairs {
        match format {
            EnvFormat::Plain => {
                if v.contains(['\n', '\r']) {
                    bail!("{k} holds a line break, which a KEY=VALUE line cannot carry; use --print-env=shell");
                }
                out.push_str(&format!("{k}={v}\n"));
            }
            EnvFormat::Shell => out.push_str(&format!("export {k}={}\n", shell_quote(v))),
        }
    }
    Ok(out)
}

/// The line that loads the connection settings into a shell, quoted so that any path pastes
/// safely (spaces, quotes, `$(...)`).
pub(crate) fn use_them_line(env_file: &std::path::Path) -> String {
    format!("set -a; . {}; set +a; psql \"$DATABASE_URL\"", shell_quote(&env_file.display().to_string()))
}

impl Setup {
    pub(crate) async fn run(mut self) -> Result<()> {
        let total = Instant::now();
        let now = parse_now(self.now.as_deref())?;
        let mut ws = workspace()?;
        ws.connect_timeout = self.connect_timeout;
        let saved = e2e_migrations::lifecycle::read_saved(&ws)?;
        let previous = match &saved {
            Saved::Ours(r) => Some(r.setup.clone()),
            _ => None,
        };
        let asked = Asked {
            backend: Some(self.backend),
            url: self.database_url.as_deref(),
            context: self.cluster.context.as_deref(),
            namespace: self.cluster.namespace.as_deref(),
        };
        // a dry run with a backend named changes nothing, so it may show any backend
        let against = if self.dry_run && self.backend != Backend::Auto { None } else { previous.as_ref() };
        let choice = follow::choose_setup(&asked, against, kind::unavailable_reason).map_err(anyhow::Error::msg)?;
        let backend = choice.backend;
        match &choice.why {
            Some(why) => say!("backend: {} ({why})", follow::backend_name(backend)),
            None => say!("backend: {}", follow::backend_name(backend)),
        }
        if let Some(n) = &choice.note {
            say!("  note: {n}");
        }
        if let (true, Some(p)) = (choice.follows, &previous) {
            follow::follow_flags(&mut self, p);
        }
        self.backend = backend;
        if self.dry_run && matches!(backend, Backend::Local | Backend::Url) {
            bail!("--dry-run is for --backend kind or kube; to see what migrations would run, use `cargo xtask migrate plan`");
        }
        let (project, sets) = load_project(&self.sets)?;
        if choice.follows && !sets.is_empty() && previous.as_ref().is_some_and(|p| p.sets == sets) {
            say!("  sets: {} (the setup's)", sets.join(","));
        }
        let mut server: Option<LocalServer> = None;
        let cache = match backend {
            Backend::Local => cache_request(&ws, &project, &sets, now)?,
            _ => None,
        };
        let (mut st, mut client, reused) = match backend {
            Backend::Local => {
                let step = Step::start("local PostgreSQL");
                let s = local::ensure_running(&ws, &StartOptions { cache: cache.clone() }).await?;
                step.done(format!("{} on 127.0.0.1:{}", s.started.word(), s.local.port));
                for n in &s.notes {
                    say!("    {n}");
                }
                let client = connect(&s.url(), self.connect_timeout).await?;
                let reused = (s.started == local::Started::Reused)
                    .then(|| format!("local server on 127.0.0.1:{}", s.local.port));
                let st = SetupState { database_url: Some(s.url()), ..SetupState::local() };
                server = Some(s);
                (st, client, reused)
            }
            Backend::Url => {
                let Some(url) = self.database_url.clone() else {
                    bail!("--backend url needs --database-url URL (or DATABASE_URL)");
                };
                let step = Step::start("connect");
                let client = connect(&url, self.connect_timeout).await?;
                step.done(e2e_migrations::db::redact(&url));
                // a server given by URL: setup made nothing and owns nothing
                let st = SetupState { database_url: Some(url), ..SetupState::new(BackendKind::Url) };
                let reused =
                    Some(format!("server {}", e2e_migrations::db::redact(st.database_url.as_deref().unwrap_or(""))));
                (st, client, reused)
            }
            Backend::Kind | Backend::Kube => match kind::setup(&self, &ws, &saved).await? {
                Some(made) => (made.state, made.client, made.reused),
                None => return Ok(()), // dry run: printed the plan
            },
            Backend::Auto => unreachable!("resolved above"),
        };

        let selection = project.select(&sets)?;
        // From here the sets asked for are this setup's, also when a migration below fails: a
        // plain setup (the nextest setup script) then retries these, not every set.
        // (A warm setup of the same sets has them saved already.)
        st.sets = sets.clone();
        if previous.as_ref().filter(|p| p.backend == st.backend).map(|p| &p.sets) != Some(&sets) {
            let phase = if matches!(backend, Backend::Kind | Backend::Kube) { Phase::Creating } else { Phase::Ready };
            st = e2e_migrations::lifecycle::save_setup(&ws, st, phase).await?.setup;
        }
        let lock_timeout = Duration::from_secs(self.lock_timeout);
        let m = crate::migrate::up_in_step(
            &mut client,
            &project,
            &selection.migrations,
            &sets,
            self.accept_drift,
            lock_timeout,
        )
        .await?;
        crate::migrate::say_applied(&m, &project.folder.dir);
        for f in &m.drift_accepted {
            say!("    warning: accepted drift of {f}");
        }
        fault_point(FaultStep::Migrations);
        let step = Step::start("partitions");
        let roll_opts = partitions::RollOptions { lock_timeout, observer: Some(step.observer()), ..Default::default() };
        let p = partitions::roll(&mut client, &selection.partitions, now, &roll_opts).await?;
        step.done(format!(
            "{} created, {} moved from default partitions{}",
            p.created.len(),
            e2e_migrations::error::counted(p.moved_rows, "row", "rows"),
            if p.pruned.is_empty() { String::new() } else { format!(", {} pruned", p.pruned.len()) }
        ));
        for n in &p.notes {
            say!("    {n}");
        }
        fault_point(FaultStep::Partitions);
        drop(client);

        // A server made by initdb with exactly these sets applied: keep a copy for cold starts.
        if let (Some(s), Some(req)) = (server.take(), &cache) {
            if s.started == local::Started::Created {
                let step = Step::start("server cache");
                let s = local::store_in_cache(&ws, s, req).await?;
                step.done(format!("stored for the next cold start ({})", req.label));
                st.database_url = Some(s.url());
            }
        }

        st.sets = sets;
        let rec = e2e_migrations::lifecycle::save_setup(&ws, st, Phase::Ready).await?;
        let st = rec.setup;
        let env_file = record::env_file(&ws.state_dir);
        if let Some(line) = reuse_line(reused.as_deref(), m.applied.len()) {
            say!("{line}");
        }
        if let Some(format) = self.print_env {
            print!("{}", env_lines(&st.env(), format)?);
            if st.database_url.is_none() {
                say!("  (no DATABASE_URL: {})", NO_HOST_PORT);
            }
        } else {
            say!("ready in {:.1} s", total.elapsed().as_secs_f64());
            say!("  connection settings (0600): {}", env_file.display());
            match &st.database_url {
                Some(u) => {
                    say!("  database: {}", e2e_migrations::db::redact(u));
                    say!("  use them:  {}", use_them_line(&env_file));
                    say!("  or:        eval \"$(cargo xtask e2e-setup --print-env=shell)\"");
                    say!("  psql:      cargo xtask psql");
                }
                None => {
                    for line in cluster_hints(&st) {
                        say!("  {line}");
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_warm_setup_says_what_it_reused() {
        assert_eq!(
            reuse_line(Some("namespace e2e-a, pod postgres-3f9a1c2b-7d4b9-xk2p"), 0).as_deref(),
            Some("reused: namespace e2e-a, pod postgres-3f9a1c2b-7d4b9-xk2p, 0 applied")
        );
        assert_eq!(reuse_line(None, 3), None, "a setup that made something says what it made instead");
    }

    #[test]
    fn the_by_hand_hint_names_the_context_a_free_port_and_the_secret() {
        let st = SetupState {
            context: Some("lab".into()),
            namespace: Some("e2e-a".into()),
            owned: true,
            run_id: Some("3f9a1c2b".into()),
            ..SetupState::new(BackendKind::Kube)
        };
        let hints = cluster_hints(&st).join("\n");
        assert!(hints.contains("cargo xtask psql"), "{hints}");
        assert!(hints.contains("cargo xtask port-forward"), "{hints}");
        let by_hand = hints.lines().find(|l| l.starts_with("by hand:")).unwrap();
        assert!(
            by_hand.contains("kubectl --context lab --namespace e2e-a port-forward service/postgres-3f9a1c2b :5432")
        );
        assert!(!by_hand.contains(" 5432:5432") && !by_hand.contains("port-forward svc/postgres 5432"), "{by_hand}");
        assert!(by_hand.contains("get secret postgres-3f9a1c2b-credentials"), "{by_hand}");
    }

    /// A value no shell may read unquoted: `&` (a background job), spaces, a command
    /// substitution, both quotes.
    const HOSTILE: &str =
        "postgres://e2e:p@127.0.0.1:5432/e2e?application_name=a b&options=-c x=1 $(touch pwned) `id` \"dq\" 'sq'";

    #[test]
    fn print_env_shell_lines_export_the_value_exactly_through_eval() {
        let dir = std::env::temp_dir().join(format!("e2e-print-env-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pairs =
            vec![("DATABASE_URL".to_string(), HOSTILE.to_string()), ("E2E_NAMESPACE".to_string(), "e2e-a".into())];
        let lines = env_lines(&pairs, EnvFormat::Shell).unwrap();
        // eval in one shell, read in a child shell: exported, and byte for byte the value.
        let out = std::process::Command::new("sh")
            .current_dir(&dir)
            .arg("-c")
            .arg("eval \"$LINES\"; sh -c 'printf %s \"$DATABASE_URL\"; printf \"|%s\" \"$E2E_NAMESPACE\"'")
            .env("LINES", &lines)
            .env_remove("DATABASE_URL")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{HOSTILE}|e2e-a"));
        assert!(!dir.join("pwned").exists(), "the command substitution ran");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn print_env_plain_lines_are_key_value_as_nextest_reads_them() {
        let pairs = vec![("DATABASE_URL".to_string(), HOSTILE.to_string())];
        assert_eq!(env_lines(&pairs, EnvFormat::Plain).unwrap(), format!("DATABASE_URL={HOSTILE}\n"));
        let broken = vec![("KUBECONFIG".to_string(), "/a\nB=1".to_string())];
        let e = env_lines(&broken, EnvFormat::Plain).unwrap_err().to_string();
        assert!(e.contains("KUBECONFIG") && e.contains("--print-env=shell"), "{e}");
    }

    #[test]
    fn the_use_them_line_quotes_the_path() {
        assert_eq!(
            use_them_line(std::path::Path::new("/w/target/e2e/connection.env")),
            r#"set -a; . /w/target/e2e/connection.env; set +a; psql "$DATABASE_URL""#
        );
        assert_eq!(
            use_them_line(std::path::Path::new("/my dir/$(touch x)/connection.env")),
            r#"set -a; . '/my dir/$(touch x)/connection.env'; set +a; psql "$DATABASE_URL""#
        );
    }
}
