//! `cargo xtask psql` and `cargo xtask port-forward`: this checkout's database from a shell,
//! whatever the backend.
//!
//! - `psql [-- ARGS]` runs `psql` on the setup's database and passes its exit code on. A server
//!   without a host port (kube) is reached through an in-process port-forward on a free port of
//!   127.0.0.1, held while psql runs. The password goes to psql in a 0600 password file
//!   (`PGPASSFILE`, removed when psql exits), never on its command line, where `ps` shows it;
//!   host, port, user and database go in `PGHOST`, `PGPORT`, `PGUSER`, `PGDATABASE`.
//! - `port-forward [--port N]`, for other tools: holds such a forward and prints
//!   `DATABASE_URL=...` on stdout until Ctrl-C. A setup with a host port (local, Kind, url) needs
//!   none: it prints the URL and returns.
//!
//! What psql is given is a pure function of the URL ([`psql_env`], [`pgpass_line`]).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use e2e_migrations::lifecycle::{self, record, Access, Route};

use crate::cli_util::workspace;
use crate::flags::{PortForward, Psql};
use crate::progress::say;

/// The exit code a command ends with when it is not an error of ours (psql's own).
#[derive(Debug)]
pub(crate) struct ExitWith(pub(crate) u8);

impl std::fmt::Display for ExitWith {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit code {}", self.0)
    }
}

impl std::error::Error for ExitWith {}

/// Where psql connects, read from a URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Conn {
    /// Host (or socket folder).
    pub(crate) host: String,
    /// Port.
    pub(crate) port: u16,
    /// User.
    pub(crate) user: String,
    /// Database.
    pub(crate) database: String,
    /// Password, if any.
    pub(crate) password: Option<String>,
}

/// Reads host, port, user, database and password from a `postgres://` URL (pure).
pub(crate) fn parse_conn(url: &str) -> Result<Conn> {
    let c: tokio_postgres::Config =
        url.parse().map_err(|e| anyhow::anyhow!("the setup's URL {}: {e}", e2e_migrations::db::redact(url)))?;
    let host = match c.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "127.0.0.1".to_string(),
    };
    Ok(Conn {
        host,
        port: c.get_ports().first().copied().unwrap_or(5432),
        user: c.get_user().unwrap_or("postgres").to_string(),
        database: c.get_dbname().unwrap_or("postgres").to_string(),
        password: c.get_password().map(|p| String::from_utf8_lossy(p).into_owned()),
    })
}

/// The environment psql gets (pure): where to connect, and the password file when there is a
/// password. The password itself is never among them.
pub(crate) fn psql_env(conn: &Conn, passfile: Option<&Path>) -> Vec<(String, String)> {
    let mut env = vec![
        ("PGHOST".to_string(), conn.host.clone()),
        ("PGPORT".to_string(), conn.port.to_string()),
        ("PGUSER".to_string(), conn.user.clone()),
        ("PGDATABASE".to_string(), conn.database.clone()),
    ];
    if let Some(f) = passfile {
        env.push(("PGPASSFILE".to_string(), f.display().to_string()));
    }
    env
}

/// Variables that would take psql elsewhere or override the password file; removed.
pub(crate) const CLEARED_ENV: &[&str] = &["PGPASSWORD", "PGSERVICE", "PGSERVICEFILE", "PGHOSTADDR", "DATABASE_URL"];

/// One line of a password file: `host:port:*:user:password`, with `:` and `\` escaped (pure).
pub(crate) fn pgpass_line(conn: &Conn, password: &str) -> String {
    let esc = |s: &str| s.replace('\\', "\\\\").replace(':', "\\:");
    format!("{}:{}:*:{}:{}\n", esc(&conn.host), conn.port, esc(&conn.user), esc(password))
}

/// The exit code of a finished process: its own, or 128 + the signal that ended it (pure).
pub(crate) fn exit_code(status: std::process::ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => c.clamp(0, 255) as u8,
        (None, Some(sig)) => (128 + sig).clamp(0, 255) as u8,
        (None, None) => 1,
    }
}

/// `psql` on PATH, else next to the server binaries the local backend uses.
fn find_psql() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("PATH") {
        if let Some(p) = std::env::split_paths(&path).map(|d| d.join("psql")).find(|p| p.is_file()) {
            return Ok(p);
        }
    }
    if let Ok(bindir) = lifecycle::local::find_bindir() {
        let p = bindir.join("psql");
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!("psql is not on PATH: install the PostgreSQL client (postgresql-client, or `brew install libpq`)")
}

/// Removes the password file when dropped.
struct PassFile(PathBuf);

impl Drop for PassFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Psql {
    pub(crate) async fn run(self) -> Result<()> {
        let psql = find_psql()?;
        let mut ws = workspace()?;
        ws.connect_timeout = self.db.connect_timeout;
        let endpoint = lifecycle::resolve(&ws, self.db.database_url.as_deref(), Access::ReadOnly).await?;
        say!("psql: {} ({})", e2e_migrations::db::redact(&endpoint.url), endpoint.origin);
        let conn = parse_conn(&endpoint.url)?;
        let passfile = match &conn.password {
            Some(pw) => {
                let here = ws.canonical_state_dir()?;
                let f = PassFile(here.join(format!("psql-{}.pgpass", std::process::id())));
                record::write_private(&f.0, pgpass_line(&conn, pw).as_bytes())?;
                Some(f)
            }
            None => None,
        };
        let mut cmd = tokio::process::Command::new(&psql);
        cmd.args(&self.args);
        for v in CLEARED_ENV {
            cmd.env_remove(v);
        }
        cmd.envs(psql_env(&conn, passfile.as_ref().map(|f| f.0.as_path())));
        // Ctrl-C belongs to psql (it cancels a query); this process keeps the forward meanwhile.
        let ignore_interrupts = tokio::spawn(async { while tokio::signal::ctrl_c().await.is_ok() {} });
        let status = cmd.status().await.with_context(|| format!("running {}", psql.display()));
        ignore_interrupts.abort();
        drop(passfile);
        drop(endpoint);
        match exit_code(status?) {
            0 => Ok(()),
            code => Err(ExitWith(code).into()),
        }
    }
}

impl PortForward {
    pub(crate) async fn run(self) -> Result<()> {
        let mut ws = workspace()?;
        ws.connect_timeout = self.connect_timeout;
        let saved = lifecycle::read_saved(&ws)?;
        let file = record::record_file(&ws.state_dir);
        match lifecycle::resolve::route(None, &saved, Access::ReadOnly, &file)? {
            Route::Kube { kubeconfig, context, namespace, run_id } => {
                let server = e2e_migrations::kube::Server { kubeconfig, context, namespace: namespace.clone(), run_id };
                let forward = server.local_forward_on(self.port.unwrap_or(0)).await?;
                println!("DATABASE_URL={}", forward.url);
                say!(
                    "forwarding 127.0.0.1:{} to PostgreSQL in namespace {namespace}; Ctrl-C stops it",
                    forward.addr.port()
                );
                tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")?;
                drop(forward);
                say!("stopped");
                Ok(())
            }
            _ => {
                let endpoint = lifecycle::resolve(&ws, None, Access::ReadOnly).await?;
                println!("DATABASE_URL={}", endpoint.url);
                say!("no forward needed: {} has a host port", endpoint.origin);
                if let Some(p) = self.port {
                    say!("  (--port {p} is for a cluster's forward: this server keeps its own port)");
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psql_gets_where_to_connect_in_the_environment_and_never_the_password() {
        let conn = parse_conn("postgres://e2e:s3cr%3At@127.0.0.1:40123/e2e").unwrap();
        assert_eq!(
            conn,
            Conn {
                host: "127.0.0.1".into(),
                port: 40123,
                user: "e2e".into(),
                database: "e2e".into(),
                password: Some("s3cr:t".into())
            }
        );
        let env = psql_env(&conn, Some(Path::new("/w/target/e2e/psql-1.pgpass")));
        let text = format!("{env:?}");
        assert!(!text.contains("s3cr"), "{text}");
        assert!(env.contains(&("PGPORT".into(), "40123".into())));
        assert!(env.contains(&("PGPASSFILE".into(), "/w/target/e2e/psql-1.pgpass".into())));
        assert!(CLEARED_ENV.contains(&"PGPASSWORD"), "an inherited password must not override the file");
        assert_eq!(pgpass_line(&conn, "s3cr:t"), "127.0.0.1:40123:*:e2e:s3cr\\:t\n");
        assert_eq!(pgpass_line(&conn, r"a\b"), "127.0.0.1:40123:*:e2e:a\\\\b\n");
        assert_eq!(psql_env(&parse_conn("postgres://u@h/d").unwrap(), None).len(), 4, "no password, no file");
    }

    #[test]
    fn psqls_exit_code_is_passed_on() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(exit_code(std::process::ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(exit_code(std::process::ExitStatus::from_raw(0)), 0);
        assert_eq!(exit_code(std::process::ExitStatus::from_raw(9)), 137, "killed by SIGKILL");
    }
}
