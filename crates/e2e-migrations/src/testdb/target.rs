//! The server test databases are made on, as a URL (the lifecycle decides which server).

use super::engine::on_engine;
use crate::db;
use crate::error::{Error, Result};

/// Replaces the database of a `postgres://` URL (or a `key=value` connection string) (pure).
pub fn swap_database(url: &str, database: &str) -> Result<String> {
    if let Some((scheme, rest)) = url.split_once("://") {
        if scheme != "postgres" && scheme != "postgresql" {
            return Err(Error::Other(format!(
                "database URL {}: expected postgres:// or postgresql://",
                db::redact(url)
            )));
        }
        let (before_query, query) = match rest.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (rest, None),
        };
        // The authority ends at the first '/' after the last '@' (passwords may hold '/').
        let auth_start = before_query.rfind('@').map(|i| i + 1).unwrap_or(0);
        let authority_end = before_query[auth_start..].find('/').map(|i| i + auth_start).unwrap_or(before_query.len());
        let mut out = format!("{scheme}://{}/{database}", &before_query[..authority_end]);
        if let Some(q) = query {
            let kept: Vec<&str> = q.split('&').filter(|kv| !kv.starts_with("dbname=")).collect();
            if !kept.is_empty() {
                out.push('?');
                out.push_str(&kept.join("&"));
            }
        }
        return Ok(out);
    }
    if url.contains('=') {
        let mut parts: Vec<String> =
            url.split_whitespace().filter(|kv| !kv.starts_with("dbname=")).map(str::to_string).collect();
        parts.push(format!("dbname={database}"));
        return Ok(parts.join(" "));
    }
    Err(Error::Other(format!("database URL {:?}: expected postgres://... or key=value pairs", db::redact(url))))
}

/// A server that test databases are made on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Any database URL on the server; others are derived by swapping the database name.
    pub url: String,
}

impl Target {
    /// A server by URL (the role needs `CREATEDB`).
    pub fn url(url: impl Into<String>) -> Target {
        Target { url: url.into() }
    }

    /// The URL of `database` on this server.
    pub fn url_for(&self, database: &str) -> Result<String> {
        swap_database(&self.url, database)
    }
}

/// The server of this process's test databases when the caller names none: `DATABASE_URL`, else
/// what this checkout's setup left, else its local server (started or created on demand), as
/// the lifecycle resolves it. Resolved once per process on the engine's runtime; a port-forward
/// it needs is kept for the life of the process.
pub(super) async fn default_target() -> Result<Target> {
    static ENDPOINT: tokio::sync::OnceCell<crate::lifecycle::Endpoint> = tokio::sync::OnceCell::const_new();
    let endpoint = on_engine(async {
        ENDPOINT
            .get_or_try_init(|| async {
                let ws = crate::lifecycle::Workspace::current()?;
                let url = std::env::var("DATABASE_URL").ok();
                crate::lifecycle::resolve(&ws, url.as_deref(), crate::lifecycle::Access::StartIfNeeded).await
            })
            .await
            .map(|e| e.url.clone())
    })
    .await?;
    Ok(Target { url: endpoint })
}
