//! What a test run left behind on the shared server: the databases there after the run that
//! were not there before it, other than those kept on purpose between runs.
//!
//! Kept on purpose: the server's own databases, the setup's database (the one the endpoint's
//! URL names), test-database templates (a cache, replaced when a migration changes) and the
//! ready clones of a template that exists (the pool every test process shares). Everything
//! else that is new is left behind: a test's database (`e2e_t_...`), a scratch database
//! (`e2e_s_...`), a template build (`e2e_b_...`), a ready clone whose template is gone, and any
//! database a test made under a name of its own.

use std::collections::BTreeSet;

use e2e_migrations::lifecycle::{self, Access, LifecycleError, Workspace};
use e2e_migrations::testdb::{parse_name, DbName};
use e2e_migrations::{db, Error};
use serde::{Deserialize, Serialize};

/// The databases on a server at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The server's URL without its password, or `None` when no server was set up or running.
    pub server: Option<String>,
    /// The database the endpoint's URL names (the setup's own).
    pub own: Option<String>,
    /// Every database on it.
    pub databases: BTreeSet<String>,
}

/// The server's own databases.
const SYSTEM: &[&str] = &["postgres", "template0", "template1"];

/// The databases of `after` that a test run left behind since `before` (pure), sorted.
pub fn left_behind(before: &Snapshot, after: &Snapshot) -> Vec<String> {
    let templates: BTreeSet<String> = after
        .databases
        .iter()
        .filter_map(|d| match parse_name(d) {
            Some(DbName::Template { hash, .. }) => Some(hash),
            _ => None,
        })
        .collect();
    let kept = |d: &str| {
        SYSTEM.contains(&d)
            || after.own.as_deref() == Some(d)
            || match parse_name(d) {
                Some(DbName::Template { .. }) => true,
                Some(DbName::Ready { hash, .. }) => templates.contains(&hash),
                _ => false,
            }
    };
    after.databases.iter().filter(|d| !before.databases.contains(*d) && !kept(d)).cloned().collect()
}

/// Whether `after` can be compared with `before` (pure): the tests start the shared server, so
/// there must be one after them, and the same one as before when there was one then. A check
/// that compared nothing, or two servers' lists, would pass whatever the tests left.
pub fn comparable(before: &Snapshot, after: &Snapshot) -> Result<(), String> {
    match (&before.server, &after.server) {
        (_, None) => Err(format!(
            "no server after the tests (before: {}): the tests start the shared server, so it should be running; nothing \
             was checked",
            before.server.as_deref().unwrap_or("none")
        )),
        (Some(b), Some(a)) if a != b => Err(format!(
            "the server after the tests ({a}) is not the one before them ({b}): their databases cannot be compared"
        )),
        _ => Ok(()),
    }
}

/// The databases on this checkout's server now (`DATABASE_URL`, else what setup left), found
/// without starting or creating anything: an empty snapshot when nothing is set up or the
/// local server is not running.
pub fn snapshot() -> Result<Snapshot, String> {
    crate::block_on(async {
        let ws = Workspace::current()?;
        let url = std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty());
        let endpoint = match lifecycle::resolve(&ws, url.as_deref(), Access::ReadOnly).await {
            Ok(e) => e,
            Err(Error::Lifecycle(LifecycleError::NotSetUp { .. } | LifecycleError::ServerDown { .. })) => {
                return Ok(Snapshot::default());
            }
            Err(e) => return Err(e),
        };
        let own = endpoint.url.parse::<tokio_postgres::Config>().ok().and_then(|c| c.get_dbname().map(String::from));
        let admin = db::connect(&db::with_database(&endpoint.url, "postgres")?).await?;
        let rows = admin
            .query("SELECT datname::text FROM pg_database", &[])
            .await
            .map_err(|e| Error::Db { context: "listing the databases".into(), source: e.into() })?;
        Ok(Snapshot {
            server: Some(db::redact(&endpoint.url)),
            own,
            databases: rows.iter().map(|r| r.get(0)).collect(),
        })
    })
    .map_err(|e: Error| e2e_migrations::error::report(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(own: Option<&str>, names: &[&str]) -> Snapshot {
        Snapshot {
            server: Some("postgres://e2e:***@127.0.0.1:5432/e2e".into()),
            own: own.map(String::from),
            databases: names.iter().map(|n| n.to_string()).collect(),
        }
    }

    #[test]
    fn caches_and_the_setup_database_are_kept_and_everything_else_new_is_named() {
        let before = Snapshot::default();
        let after = snap(
            Some("e2e"),
            &[
                "postgres",
                "template0",
                "template1",
                "e2e",
                "e2e_tpl_aaaaaaaaaaaa_audit",
                "e2e_r_aaaaaaaaaaaa_ab12_7_1_1",
                "e2e_r_bbbbbbbbbbbb_ab12_7_1_2",
                "e2e_t_aaaaaaaaaaaa_ab12_7_1_3",
                "e2e_b_aaaaaaaaaaaa_ab12_7_1_4",
                "e2e_s_ab12_7_1_5",
                "cli_0123456789ab",
            ],
        );
        assert_eq!(
            left_behind(&before, &after),
            [
                "cli_0123456789ab",
                "e2e_b_aaaaaaaaaaaa_ab12_7_1_4",
                "e2e_r_bbbbbbbbbbbb_ab12_7_1_2",
                "e2e_s_ab12_7_1_5",
                "e2e_t_aaaaaaaaaaaa_ab12_7_1_3",
            ]
        );
    }

    #[test]
    fn only_the_same_server_before_and_after_is_compared() {
        let none = Snapshot::default();
        let a = snap(Some("e2e"), &["postgres", "e2e"]);
        let mut b = a.clone();
        b.server = Some("postgres://e2e@127.0.0.1:2/e2e".into());
        assert_eq!(comparable(&none, &a), Ok(()), "a fresh clone: the tests start the server");
        assert_eq!(comparable(&a, &a), Ok(()));
        assert!(comparable(&none, &none).unwrap_err().contains("no server after the tests (before: none)"));
        assert!(comparable(&a, &none).unwrap_err().contains("no server after the tests"));
        assert!(comparable(&a, &b).unwrap_err().contains("is not the one before them"));
    }

    #[test]
    fn what_was_there_before_is_not_this_runs_doing() {
        let before = snap(Some("e2e"), &["postgres", "e2e", "cli_old", "e2e_s_ab12_7_1_5"]);
        let after = snap(Some("e2e"), &["postgres", "e2e", "cli_old", "e2e_s_ab12_7_1_5", "e2e_s_ab12_8_1_1"]);
        assert_eq!(left_behind(&before, &after), ["e2e_s_ab12_8_1_1"]);
        assert!(left_behind(&after, &after).is_empty());
    }
}
