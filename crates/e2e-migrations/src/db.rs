//! Connections and the advisory lock shared by migrations and partition rolls.

use std::time::{Duration, Instant};

use tokio_postgres::{Client, Config, NoTls};

use crate::error::{DbContext, Error, Result};
use crate::progress::{self, Event, Observer};

/// The advisory lock key: goose's own default lock id, so that this tool and goose (with its
/// session locker on) never migrate the same database at once.
pub const LOCK_ID: i64 = 5_887_940_537_704_921_958;

/// The `application_name` our connections carry, so that lock waits can say who holds it.
pub const APPLICATION_NAME: &str = "e2e-migrations";

/// Environment variable: seconds a connection may take to be ready (TCP, startup and
/// authentication), for every connection this library opens; default [`DEFAULT_CONNECT_TIMEOUT`].
pub const CONNECT_TIMEOUT_ENV: &str = "E2E_CONNECT_TIMEOUT";

/// How long a connection may take when [`CONNECT_TIMEOUT_ENV`] does not say.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What a connect timeout must be, for messages.
pub(crate) const TIMEOUT_EXPECTED: &str = "expected a number of seconds above 0, e.g. 10";

/// A connect timeout that is not a number of seconds above 0 (at most a day).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?}: {TIMEOUT_EXPECTED}")]
pub struct InvalidTimeout {
    /// The value given.
    pub value: String,
}

/// Parses a connect timeout in seconds (`10`, `2.5`), as [`CONNECT_TIMEOUT_ENV`] takes it.
pub fn parse_timeout(s: &str) -> std::result::Result<Duration, InvalidTimeout> {
    match s.trim().parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs > 0.0 && secs <= 86_400.0 => Ok(Duration::from_secs_f64(secs)),
        _ => Err(InvalidTimeout { value: s.to_string() }),
    }
}

/// The connect timeout from [`CONNECT_TIMEOUT_ENV`], else [`DEFAULT_CONNECT_TIMEOUT`].
pub fn connect_timeout() -> Result<Duration> {
    match std::env::var(CONNECT_TIMEOUT_ENV) {
        Ok(value) => parse_timeout(&value).map_err(|_| Error::InvalidEnv {
            var: CONNECT_TIMEOUT_ENV,
            value,
            expected: TIMEOUT_EXPECTED,
        }),
        Err(_) => Ok(DEFAULT_CONNECT_TIMEOUT),
    }
}

/// Opens one connection from a `postgres://` URL (or key=value string), without TLS, within the
/// timeout of [`connect_timeout`].
///
/// The connection task runs on the current tokio runtime. The session asks the server to notice
/// a vanished client (`client_connection_check_interval`, PostgreSQL 14+) so that a killed run
/// releases its locks within a second instead of when its current statement ends.
pub async fn connect(url: &str) -> Result<Client> {
    connect_within(url, connect_timeout()?).await
}

/// As [`connect`], with the time the whole startup may take (TCP connect, the startup exchange,
/// authentication and session setup): an address where something else listens, or a forward that
/// never answers, fails within it, naming the address. Errors never show the password.
pub async fn connect_within(url: &str, timeout: Duration) -> Result<Client> {
    if let Some(reason) = foreign_scheme(url) {
        return Err(Error::InvalidUrl { url: redact(url), reason });
    }
    let mut config: Config = url.parse().map_err(|e: tokio_postgres::Error| Error::InvalidUrl {
        url: redact(url),
        reason: scrub_parse_error(&crate::error::report(&e)),
    })?;
    if unencoded_at_in_credentials(url) {
        return Err(Error::InvalidUrl {
            url: redact(url),
            reason: "its user name or password holds an unencoded '@'; write it as %40".to_string(),
        });
    }
    if config.get_application_name().is_none() {
        config.application_name(APPLICATION_NAME);
    }
    let address = address(&config);
    match start_within(config, timeout).await {
        Ok(client) => Ok(client),
        // Refused by the server (authentication, no such database), or refused, reset, or
        // answered by something that is not PostgreSQL: say which address, then why.
        Err(Startup::Failed(source)) => Err(Error::Connect { address, url: redact(url), source: source.into() }),
        Err(Startup::TimedOut(timeout)) => Err(Error::ConnectTimeout { address, url: redact(url), timeout }),
    }
}

/// Why [`start_within`] gave no connection.
#[derive(Debug)]
pub(crate) enum Startup {
    /// The driver's error: refused, reset, an answer that is not PostgreSQL's, or the server's
    /// own refusal (authentication, a server starting up).
    Failed(tokio_postgres::Error),
    /// No complete startup within this time.
    TimedOut(Duration),
}

impl Startup {
    /// The library error, with `context` saying what was being connected to.
    pub(crate) fn into_error(self, context: String) -> Error {
        match self {
            Startup::Failed(source) => Error::Db { context, source: source.into() },
            Startup::TimedOut(timeout) => Error::NoAnswer { context, timeout },
        }
    }
}

/// Opens one connection from `config` (TCP or a unix socket) within `timeout` for the whole
/// startup (connect, startup exchange, authentication, session setup), the connection task on
/// the current runtime. Every connection this library opens goes through here, so none can hang.
pub(crate) async fn start_within(mut config: Config, timeout: Duration) -> Result<Client, Startup> {
    if config.get_connect_timeout().is_none_or(|t| *t > timeout) {
        config.connect_timeout(timeout);
    }
    let connecting = async {
        let (client, connection) = config.connect(NoTls).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("connection closed: {e}");
            }
        });
        if let Err(e) = client.batch_execute("SET client_connection_check_interval = 1000").await {
            if e.code() != Some(&tokio_postgres::error::SqlState::UNDEFINED_OBJECT) {
                return Err(e);
            }
        }
        Ok(client)
    };
    match tokio::time::timeout(timeout, connecting).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(e)) => Err(Startup::Failed(e)),
        Err(_) => Err(Startup::TimedOut(timeout)),
    }
}

/// The host:port (or socket folder) list a config connects to, for messages.
fn address(config: &Config) -> String {
    let ports = config.get_ports();
    let port = |i: usize| ports.get(i).or(ports.first()).copied().unwrap_or(5432);
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| match h {
            tokio_postgres::config::Host::Tcp(h) if h.contains(':') => format!("[{h}]:{}", port(i)),
            tokio_postgres::config::Host::Tcp(h) => format!("{h}:{}", port(i)),
            tokio_postgres::config::Host::Unix(p) => format!("{}/.s.PGSQL.{}", p.display(), port(i)),
        })
        .collect();
    if hosts.is_empty() {
        "the default host".to_string()
    } else {
        hosts.join(",")
    }
}

/// Whether a `postgres://` URL's user name or password holds a raw `@`: the driver reads the
/// credentials up to the first `@`, so the rest of the password would be taken for the host.
fn unencoded_at_in_credentials(url: &str) -> bool {
    let Some((_, rest)) = url.split_once("://") else { return false };
    let Some((_, after)) = rest.split_once('@') else { return false };
    let host = after.split(['/', '?']).next().unwrap_or("");
    host.contains('@')
}

/// Why a `scheme://...` string is no PostgreSQL URL (pure), if it is not: the driver would read it
/// as key=value settings and say only "unexpected EOF".
fn foreign_scheme(url: &str) -> Option<String> {
    let (scheme, _) = url.trim_start().split_once("://")?;
    if scheme.is_empty() || !scheme.bytes().all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)) {
        return None;
    }
    let lower = scheme.to_ascii_lowercase();
    (lower != "postgres" && lower != "postgresql")
        .then(|| format!("the scheme {scheme:?} is not PostgreSQL's: a URL starts with postgres:// or postgresql://"))
}

/// The driver's parse error without any piece of the input it may quote (an option name it did
/// not know may be part of a password).
fn scrub_parse_error(message: &str) -> String {
    if let Some(i) = message.find("unknown option") {
        return format!(
            "{}unknown option (a word that is not a connection setting: a misspelt setting, or part of a value \
             with a space that is not in single quotes, as password='a b' is)",
            &message[..i]
        );
    }
    if let Some(i) = message.find("unexpected character at byte") {
        let rest = &message[i..];
        let end = rest.find(':').unwrap_or(rest.len());
        return format!("{}{}", &message[..i], &rest[..end]);
    }
    message.to_string()
}

/// The same connection string naming another database (pure): a `postgres://` URL's path, or a
/// key=value string's `dbname`; any `dbname=` query parameter is dropped, so that `database` wins.
pub fn with_database(url: &str, database: &str) -> Result<String> {
    if let Some((scheme, rest)) = url.split_once("://") {
        if scheme != "postgres" && scheme != "postgresql" {
            return Err(Error::InvalidUrl { url: redact(url), reason: "expected postgres:// or postgresql://".into() });
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
    Err(Error::InvalidUrl { url: redact(url), reason: "expected postgres://... or key=value pairs".into() })
}

/// A connection string with its password replaced by `***`, for messages: in a URL's userinfo
/// (also with an unencoded `@` in the password, which is why the last `@` ends the userinfo), in
/// its `password=` query parameter, and in a key=value string (`password=x`, `password = 'a b'`,
/// with escapes). Errs towards hiding more, never less.
pub fn redact(url: &str) -> String {
    let trimmed = url.trim_start();
    let lower = trimmed.to_ascii_lowercase();
    if lower.starts_with("postgres://") || lower.starts_with("postgresql://") || trimmed.contains("://") {
        redact_url(url)
    } else {
        redact_conninfo(url)
    }
}

fn redact_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("checked by the caller");
    let rest = match rest.rfind('@') {
        Some(at) => {
            let (userinfo, host) = (&rest[..at], &rest[at + 1..]);
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:***@{host}"),
                None => rest.to_string(),
            }
        }
        None => rest.to_string(),
    };
    // `?password=...` / `&password=...`, up to the next `&key=` (a raw `&` in it stays hidden).
    let mut out = String::with_capacity(rest.len());
    let mut s = rest.as_str();
    while let Some(i) = find_ci(s, "password=") {
        let starts_param = i > 0 && matches!(s.as_bytes()[i - 1], b'?' | b'&');
        let value_start = i + "password=".len();
        out.push_str(&s[..value_start]);
        if !starts_param {
            s = &s[value_start..];
            continue;
        }
        out.push_str("***");
        let value = &s[value_start..];
        let end = next_param(value).unwrap_or(value.len());
        s = &value[end..];
    }
    out.push_str(s);
    format!("{scheme}://{out}")
}

/// Connection settings libpq and the driver know: after a password, only one of these starts the
/// next setting; anything else may still be part of the password.
const KNOWN_KEYS: &[&str] = &[
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "passfile",
    "connect_timeout",
    "client_encoding",
    "options",
    "application_name",
    "fallback_application_name",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
    "replication",
    "gssencmode",
    "sslmode",
    "sslcompression",
    "sslcert",
    "sslkey",
    "sslpassword",
    "sslrootcert",
    "sslcrl",
    "sslcrldir",
    "sslsni",
    "requirepeer",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "krbsrvname",
    "gsslib",
    "service",
    "target_session_attrs",
    "channel_binding",
    "load_balance_hosts",
    "sslnegotiation",
    "require_auth",
];

fn known_key(key: &str) -> bool {
    KNOWN_KEYS.iter().any(|k| k.eq_ignore_ascii_case(key))
}

/// The offset of the `&` that starts the next known `key=` parameter in `s`.
fn next_param(s: &str) -> Option<usize> {
    s.match_indices('&').map(|(i, _)| i).find(|&i| {
        let key: String = s[i + 1..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        known_key(&key) && s[i + 1 + key.len()..].starts_with('=')
    })
}

fn find_ci(haystack: &str, needle: &str) -> Option<usize> {
    haystack.to_ascii_lowercase().find(needle)
}

/// Redacts `password` values of a libpq key=value string, parsed as the driver parses it.
fn redact_conninfo(s: &str) -> String {
    let chars: Vec<(usize, char)> = s.char_indices().collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    let mut copied = 0; // byte offset up to which `s` is copied to `out`
    let mut hiding = false; // after a password, until a known setting
    let byte = |i: usize| chars.get(i).map(|c| c.0).unwrap_or(s.len());
    while i < chars.len() {
        while i < chars.len() && chars[i].1.is_whitespace() {
            i += 1;
        }
        let key_start = i;
        while i < chars.len() && !chars[i].1.is_whitespace() && chars[i].1 != '=' {
            i += 1;
        }
        let key = &s[byte(key_start)..byte(i)];
        while i < chars.len() && chars[i].1.is_whitespace() {
            i += 1;
        }
        if i >= chars.len() || chars[i].1 != '=' {
            // Not key=value: hide the rest, since it may be part of a password.
            if key_start < chars.len() {
                out.push_str(&s[copied..byte(key_start)]);
                out.push_str("***");
                copied = s.len();
            }
            break;
        }
        i += 1;
        while i < chars.len() && chars[i].1.is_whitespace() {
            i += 1;
        }
        let value_start = i;
        if i < chars.len() && chars[i].1 == '\'' {
            i += 1;
            while i < chars.len() && chars[i].1 != '\'' {
                i += if chars[i].1 == '\\' { 2 } else { 1 };
            }
            i = (i + 1).min(chars.len());
        } else {
            while i < chars.len() && !chars[i].1.is_whitespace() {
                i += if chars[i].1 == '\\' { 2 } else { 1 };
            }
            i = i.min(chars.len());
        }
        if key.eq_ignore_ascii_case("password") {
            out.push_str(&s[copied..byte(value_start)]);
            out.push_str("***");
            copied = byte(i);
            hiding = true;
        } else if hiding && !known_key(key) {
            // A word after the password that is no known setting: an unquoted space cut the
            // password, and this is its rest.
            out.push_str(&s[copied..byte(key_start)]);
            out.push_str("***");
            copied = byte(i);
        } else {
            hiding = false;
        }
    }
    out.push_str(&s[copied.min(s.len())..]);
    out
}

/// Takes the session advisory lock [`LOCK_ID`], polling `pg_try_advisory_lock` (a blocking
/// `pg_advisory_lock` can deadlock with `CREATE INDEX CONCURRENTLY`, which waits for every
/// other transaction). Says once what it waits for; gives up after `timeout`.
pub async fn lock(client: &Client, timeout: Duration) -> Result<()> {
    lock_key(client, LOCK_ID, timeout, "the migration lock").await
}

/// Takes the session advisory lock `key` (named `what` in messages) by polling, as [`lock`].
pub async fn lock_key(client: &Client, key: i64, timeout: Duration, what: &str) -> Result<()> {
    lock_key_observed(client, key, timeout, what, None).await
}

/// As [`lock_key`], telling `observer` of a wait ([`Event::LockWaiting`], then
/// [`Event::LockTaken`]); without one, the wait is logged (`tracing`, info).
pub async fn lock_key_observed(
    client: &Client,
    key: i64,
    timeout: Duration,
    what: &str,
    observer: Option<&Observer>,
) -> Result<()> {
    let start = Instant::now();
    let mut delay = Duration::from_millis(5);
    let mut told = false;
    loop {
        let row = client.query_one("SELECT pg_try_advisory_lock($1)", &[&key]).await.db(|| format!("taking {what}"))?;
        if row.get::<_, bool>(0) {
            if told {
                progress::notify(observer, || Event::LockTaken { lock: what.to_string(), waited: start.elapsed() });
            }
            return Ok(());
        }
        let waited = start.elapsed();
        if waited >= timeout {
            let holder = lock_holder(client, key).await?;
            return Err(Error::LockTimeout { lock: what.to_string(), holder, waited });
        }
        if !told && waited >= Duration::from_millis(200) {
            told = true;
            let holder = lock_holder(client, key).await?;
            let event = Event::LockWaiting { lock: what.to_string(), holder, timeout };
            match observer {
                Some(o) => {
                    tracing::debug!("{event}");
                    o.notify(&event);
                }
                None => tracing::info!("{event}"),
            }
        }
        tokio::time::sleep(delay.min(timeout.saturating_sub(waited))).await;
        delay = (delay * 2).min(Duration::from_millis(100));
    }
}

/// Releases the advisory lock [`LOCK_ID`].
pub async fn unlock(client: &Client) -> Result<()> {
    unlock_key(client, LOCK_ID, "the migration lock").await
}

/// Releases the session advisory lock `key` (named `what` in messages), taken by [`lock_key`].
pub async fn unlock_key(client: &Client, key: i64, what: &str) -> Result<()> {
    client.query_one("SELECT pg_advisory_unlock($1)", &[&key]).await.db(|| format!("releasing {what}"))?;
    Ok(())
}

/// Runs `work` under the advisory lock, releasing it on every path.
pub async fn with_lock<T, F>(client: &Client, timeout: Duration, work: F) -> Result<T>
where
    F: std::future::Future<Output = Result<T>>,
{
    with_lock_observed(client, timeout, None, work).await
}

/// As [`with_lock`], telling `observer` of a wait for the lock (see [`lock_key_observed`]).
pub async fn with_lock_observed<T, F>(
    client: &Client,
    timeout: Duration,
    observer: Option<&Observer>,
    work: F,
) -> Result<T>
where
    F: std::future::Future<Output = Result<T>>,
{
    lock_key_observed(client, LOCK_ID, timeout, "the migration lock", observer).await?;
    let result = work.await;
    let released = unlock(client).await;
    let value = result?;
    released?;
    Ok(value)
}

/// Who holds the advisory lock `key` in this database (advisory locks belong to a database: the
/// same key held in another one is not in the way, and is not the holder to name).
async fn lock_holder(client: &Client, key: i64) -> Result<String> {
    let rows = client
        .query(
            "SELECT a.pid, coalesce(a.application_name, ''), coalesce(a.state, ''), coalesce(left(a.query, 80), '')
               FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
              WHERE l.locktype = 'advisory' AND l.granted
                AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
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
    fn database_urls_swap_their_database() {
        let s = |u: &str| with_database(u, "postgres").unwrap();
        assert_eq!(s("postgres://u:p@127.0.0.1:5432/e2e"), "postgres://u:p@127.0.0.1:5432/postgres");
        assert_eq!(s("postgresql://u:p/w@h/e2e?sslmode=disable"), "postgresql://u:p/w@h/postgres?sslmode=disable");
        assert_eq!(s("postgres://h:5432"), "postgres://h:5432/postgres");
        assert_eq!(s("postgres://h/db?dbname=x&application_name=a"), "postgres://h/postgres?application_name=a");
        assert_eq!(s("host=h user=u dbname=e2e"), "host=h user=u dbname=postgres");
        let e = with_database("mysql://u:secret@h/db", "x").unwrap_err().to_string();
        assert!(e.contains("postgres://") && !e.contains("secret"), "{e}");
    }

    #[test]
    fn a_url_of_another_scheme_says_so() {
        let e = foreign_scheme("postgress://u:secret@h/db").unwrap();
        assert_eq!(e, "the scheme \"postgress\" is not PostgreSQL's: a URL starts with postgres:// or postgresql://");
        assert_eq!(foreign_scheme("postgres://u@h/db"), None);
        assert_eq!(foreign_scheme("PostgreSQL://u@h/db"), None);
        assert_eq!(foreign_scheme("host=h password=a://b"), None, "key=value with :// in a value");
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact("postgres://u:secret@127.0.0.1:5432/db"), "postgres://u:***@127.0.0.1:5432/db");
        assert_eq!(redact("host=x password=secret user=u"), "host=x password=*** user=u");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
    }

    #[test]
    fn redacts_every_form_of_connection_string() {
        for (input, want) in [
            ("postgresql://u:p%40ss@h:1/db?sslmode=disable", "postgresql://u:***@h:1/db?sslmode=disable"),
            ("postgres://u:p@ss@h/db", "postgres://u:***@h/db"),
            ("postgres://u:p/s?x@h/db", "postgres://u:***@h/db"),
            ("postgres://u@h/db?password=secret&sslmode=disable", "postgres://u@h/db?password=***&sslmode=disable"),
            ("postgres://h/db?sslmode=disable&password=se&cret", "postgres://h/db?sslmode=disable&password=***"),
            ("host=h password='a b' user=u", "host=h password=*** user=u"),
            ("host=h password = 'a \\' b' user=u", "host=h password = *** user=u"),
            ("password=a\\ b dbname=d", "password=*** dbname=d"),
            ("host=h password='unterminated", "host=h password=***"),
            ("host=h password", "host=h ***"),
            ("host=h oops secret", "host=h ***"),
            ("host=h password=se cret=x dbname=d", "host=h password=*** *** dbname=d"),
            ("postgres://h/db?password=a&b=c&sslmode=disable", "postgres://h/db?password=***&sslmode=disable"),
        ] {
            assert_eq!(redact(input), want, "{input}");
        }
    }

    #[test]
    fn unencoded_at_in_a_password_is_found() {
        assert!(unencoded_at_in_credentials("postgres://u:p@ss@h/db"));
        assert!(!unencoded_at_in_credentials("postgres://u:p%40ss@h/db"));
        assert!(!unencoded_at_in_credentials("postgres://u:p@h/db?application_name=a@b"));
        assert!(!unencoded_at_in_credentials("host=h password=a@b"));
    }

    #[test]
    fn connect_timeouts_parse_as_seconds() {
        assert_eq!(parse_timeout("10").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_timeout(" 2.5 ").unwrap(), Duration::from_millis(2500));
        for bad in ["0", "-1", "ten", "", "inf", "NaN"] {
            assert!(parse_timeout(bad).unwrap_err().to_string().contains("seconds above 0"), "{bad}");
        }
    }

    #[test]
    fn parse_errors_never_quote_the_input() {
        let e = "postgres://u:pw@h/db".to_string(); // a valid one parses
        assert!(e.parse::<Config>().is_ok());
        for bad in ["host=h password=se cret=x", "host=h password=secret x"] {
            let msg = scrub_parse_error(&bad.parse::<Config>().unwrap_err().to_string());
            assert!(!msg.contains("cret") && !msg.contains("x`"), "{bad}: {msg}");
        }
    }

    proptest::proptest! {
        #[test]
        fn a_password_never_survives_redaction(tail in "[a-zA-Z0-9 @:/?#&='\\\\%é]{0,16}", form in 0usize..6) {
            let pw = format!("S3cr{tail}");
            let conninfo_quoted = pw.replace('\\', "\\\\").replace('\'', "\\'");
            let conninfo_bare: String = pw.chars().flat_map(|c| if c.is_whitespace() || c == '\\' || c == '\'' { vec!['\\', c] } else { vec![c] }).collect();
            let s = match form {
                0 => format!("postgres://user:{pw}@127.0.0.1:5432/db?sslmode=disable"),
                1 => format!("postgresql://user@127.0.0.1/db?sslmode=disable&password={pw}"),
                2 => format!("host=127.0.0.1 password='{conninfo_quoted}' dbname=d"),
                3 => format!("host=127.0.0.1 password = {conninfo_bare} dbname=d"),
                4 => format!("password={conninfo_bare}"),
                // Malformed: an unquoted password with spaces.
                _ => format!("host=127.0.0.1 password={} dbname=d", pw.replace('\'', "")),
            };
            let out = redact(&s);
            proptest::prop_assert!(!out.contains("S3cr"), "{} -> {}", s, out);
        }
    }
}
