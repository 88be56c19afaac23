//! Connections and the advisory lock shared by migrations and partition rolls.

use std::time::{Duration, Instant};

use tokio_postgres::{Client, Config, NoTls};

use crate::error::{DbContext, Error, Result};

/// The advisory lock key: goose's own default lock id, so that this tool and goose (with its
/// session locker on) never migrate the same database at once.
pub const LOCK_ID: i64 = 5_887_940_537_704_921_958;

/// The `application_name` our connections carry, so that lock waits can say who holds it.
pub const APPLICATION_NAME: &str = "e2e-migrations";

/// Opens one connection from a `postgres://` URL (or key=value string), without TLS.
///
/// The connection task runs on the current tokio runtime. The session asks the server to notice
/// a vanished client (`client_connection_check_interval`, PostgreSQL 14+) so that a killed run
/// releases its locks within a second instead of when its current statement ends.
pub async fn connect(url: &str) -> Result<Client> {
    let mut config: Config = url.parse().map_err(|e| Error::Other(format!("invalid database URL: {e}")))?;
    if config.get_application_name().is_none() {
        config.application_name(APPLICATION_NAME);
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(10));
    }
    let (client, connection) = config
        .connect(NoTls)
        .await
        .map_err(|source| Error::Db { context: format!("connecting to {}", redact(url)), source })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("connection closed: {e}");
        }
    });
    if let Err(e) = client.batch_execute("SET client_connection_check_interval = 1000").await {
        if e.code() != Some(&tokio_postgres::error::SqlState::UNDEFINED_OBJECT) {
            return Err(e).db(|| "configuring the session".to_string());
        }
    }
    Ok(client)
}

/// A URL with its password replaced by `***`, for messages.
pub fn redact(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        if let Some((userinfo, host)) = rest.rsplit_once('@') {
            if let Some((user, _)) = userinfo.split_once(':') {
                return format!("{scheme}://{user}:***@{host}");
            }
        }
    }
    if url.contains("password=") {
        return url
            .split_whitespace()
            .map(|kv| if kv.starts_with("password=") { "password=***" } else { kv })
            .collect::<Vec<_>>()
            .join(" ");
    }
    url.to_string()
}

/// Takes the session advisory lock [`LOCK_ID`], polling `pg_try_advisory_lock` (a blocking
/// `pg_advisory_lock` can deadlock with `CREATE INDEX CONCURRENTLY`, which waits for every
/// other transaction). Says once what it waits for; gives up after `timeout`.
pub async fn lock(client: &Client, timeout: Duration) -> Result<()> {
    lock_key(client, LOCK_ID, timeout, "the migration lock").await
}

/// Takes the session advisory lock `key` (named `what` in messages) by polling, as [`lock`].
pub async fn lock_key(client: &Client, key: i64, timeout: Duration, what: &str) -> Result<()> {
    let start = Instant::now();
    let mut delay = Duration::from_millis(5);
    let mut told = false;
    loop {
        let row = client.query_one("SELECT pg_try_advisory_lock($1)", &[&key]).await.db(|| format!("taking {what}"))?;
        if row.get::<_, bool>(0) {
            return Ok(());
        }
        let waited = start.elapsed();
        if waited >= timeout {
            let holder = lock_holder(client, key).await?;
            return Err(Error::LockTimeout {
                waited_s: waited.as_secs_f64(),
                holder: format!("{what}, held by {holder}"),
            });
        }
        if !told && waited >= Duration::from_millis(200) {
            told = true;
            let holder = lock_holder(client, key).await?;
            tracing::info!("waiting for {what}, held by {holder} (gives up after {}s)", timeout.as_secs());
        }
        tokio::time::sleep(delay.min(timeout.saturating_sub(waited))).await;
        delay = (delay * 2).min(Duration::from_millis(100));
    }
}

/// Releases the advisory lock.
pub async fn unlock(client: &Client) -> Result<()> {
    client
        .query_one("SELECT pg_advisory_unlock($1)", &[&LOCK_ID])
        .await
        .db(|| "releasing the migration lock".to_string())?;
    Ok(())
}

/// Runs `work` under the advisory lock, releasing it on every path.
pub async fn with_lock<T, F>(client: &Client, timeout: Duration, work: F) -> Result<T>
where
    F: std::future::Future<Output = Result<T>>,
{
    lock(client, timeout).await?;
    let result = work.await;
    let released = unlock(client).await;
    let value = result?;
    released?;
    Ok(value)
}

async fn lock_holder(client: &Client, key: i64) -> Result<String> {
    let rows = client
        .query(
            "SELECT a.pid, coalesce(a.application_name, ''), coalesce(a.state, ''), coalesce(left(a.query, 80), '')
               FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
              WHERE l.locktype = 'advisory' AND l.granted
                AND ((l.classid::bigint << 32) | l.objid::bigint) = $1",
            &[&key],
        )
        .await
        .db(|| "finding the holder of an advisory lock".to_string())?;
    Ok(match rows.first() {
        Some(r) => format!(
            "pid {} ({}, {}: {:?})",
            r.get::<_, i32>(0),
            r.get::<_, String>(1),
            r.get::<_, String>(2),
            r.get::<_, String>(3)
        ),
        None => "a session that has just released it".to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact("postgres://u:secret@127.0.0.1:5432/db"), "postgres://u:***@127.0.0.1:5432/db");
        assert_eq!(redact("host=x password=secret user=u"), "host=x password=*** user=u");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
    }
}
