//! The flag that gets a user past an error, said after it: the library's messages name no CLI
//! flag (it is also called from test crates), so the CLI maps the error's kind to its own flags.

use e2e_migrations::core::Error as CoreError;
use e2e_migrations::Error;

/// A hint naming the flag (or setting) that changes the outcome of `e`, if one does.
pub(crate) fn flag_hint(e: &anyhow::Error) -> Option<&'static str> {
    e.chain().find_map(|cause| {
        if let Some(e) = cause.downcast_ref::<Error>() {
            return library(e);
        }
        cause.downcast_ref::<CoreError>().and_then(core)
    })
}

fn library(e: &Error) -> Option<&'static str> {
    match e {
        Error::Core(e) => core(e),
        Error::LockTimeout { .. } => Some("wait longer with --lock-timeout SECONDS, or stop the other run"),
        Error::ConnectTimeout { .. } => {
            Some("raise the limit with --connect-timeout SECONDS (or E2E_CONNECT_TIMEOUT) if the server is slow")
        }
        Error::InvalidEnv { var, .. } if *var == e2e_migrations::db::CONNECT_TIMEOUT_ENV => {
            Some("--connect-timeout SECONDS overrides E2E_CONNECT_TIMEOUT")
        }
        // Refused or reset before the server said anything: nothing of PostgreSQL answered.
        Error::Connect { source, .. } if source.as_db_error().is_none() => Some(
            "is a PostgreSQL server running there, on this port? (the server is --database-url, else DATABASE_URL, \
             else what e2e-setup left)",
        ),
        _ => None,
    }
}

fn core(e: &CoreError) -> Option<&'static str> {
    match e {
        CoreError::Drift { .. } => Some("pass --accept-drift to keep the applied version and record the new checksum"),
        CoreError::EmptySetName { .. } => {
            Some("--sets takes set names separated by commas, e.g. --sets audit,workflow")
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_library_errors_a_flag_gets_past_say_the_flag() {
        let drift: anyhow::Error = Error::from(CoreError::Drift { files: vec!["m/1_a.sql".into()] }).into();
        assert!(flag_hint(&drift.context("migrating")).unwrap().contains("--accept-drift"));
        let empty: anyhow::Error = CoreError::EmptySetName { list: "a,".into() }.into();
        assert!(flag_hint(&empty).unwrap().contains("--sets"));
        let lock = Error::LockTimeout {
            lock: "the migration lock".into(),
            holder: "pid 1".into(),
            waited: std::time::Duration::from_secs(1),
        };
        assert!(flag_hint(&lock.into()).unwrap().contains("--lock-timeout"));
        let slow = Error::ConnectTimeout {
            address: "127.0.0.1:1".into(),
            url: "postgres://127.0.0.1:1/x".into(),
            timeout: std::time::Duration::from_secs(1),
        };
        assert!(flag_hint(&slow.into()).unwrap().contains("--connect-timeout"));
        let other: anyhow::Error = CoreError::UnknownSet { name: "x".into(), known: vec![] }.into();
        assert_eq!(flag_hint(&other), None);
    }
}
