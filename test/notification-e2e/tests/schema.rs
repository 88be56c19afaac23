//! The notification service against the shared schema: statuses, uniqueness, escalation levels.

use e2e_migrations::TestDatabase;
use notification_e2e::{record, record_sent, set_status, SETS};
use tokio_postgres::error::SqlState;

#[tokio::test]
async fn every_documented_status_is_accepted_and_others_refused() {
    let db = TestDatabase::new(SETS).await.expect("test database");
    let c = db.connect().await.expect("connect");
    for (i, status) in ["sent", "failed", "acknowledged", "escalated"].iter().enumerate() {
        record(&c, "rem-1", &format!("n-{i}"), "slack", status, 0).await.unwrap_or_else(|e| panic!("{status}: {e}"));
    }
    for status in ["delivered", "SENT", ""] {
        let e = record(&c, "rem-1", &format!("bad-{status}"), "slack", status, 0).await.expect_err(status);
        assert_eq!(e.code(), Some(&SqlState::CHECK_VIOLATION), "{status}: {e}");
        assert_eq!(e.as_db_error().and_then(|d| d.constraint()), Some("notification_audit_status_check"));
    }
}

#[tokio::test]
async fn status_updates_are_checked_too() {
    let db = TestDatabase::new(SETS).await.expect("test database");
    let c = db.connect().await.expect("connect");
    record_sent(&c, "rem-2", "n-1", "email").await.unwrap();
    assert_eq!(set_status(&c, "n-1", "acknowledged").await.unwrap(), 1);
    let e = set_status(&c, "n-1", "read").await.expect_err("unknown status");
    assert_eq!(e.code(), Some(&SqlState::CHECK_VIOLATION), "{e}");
    let status: String =
        c.query_one("SELECT status FROM notification_audit WHERE notification_id = 'n-1'", &[]).await.unwrap().get(0);
    assert_eq!(status, "acknowledged", "the refused update changed nothing");
}

#[tokio::test]
async fn a_notification_is_recorded_once() {
    let db = TestDatabase::new(SETS).await.expect("test database");
    let c = db.connect().await.expect("connect");
    record_sent(&c, "rem-3", "n-dup", "slack").await.unwrap();
    let e = record_sent(&c, "rem-3", "n-dup", "email").await.expect_err("duplicate notification id");
    assert_eq!(e.code(), Some(&SqlState::UNIQUE_VIOLATION), "{e}");
    assert_eq!(e.as_db_error().and_then(|d| d.constraint()), Some("uq_notification_audit_notification_id"));
}

#[tokio::test]
async fn escalation_levels_are_not_negative_and_ids_increase() {
    let db = TestDatabase::new(SETS).await.expect("test database");
    let c = db.connect().await.expect("connect");
    let e = record(&c, "rem-4", "n-neg", "pager", "escalated", -1).await.expect_err("negative level");
    assert_eq!(e.code(), Some(&SqlState::CHECK_VIOLATION), "{e}");
    let first = record(&c, "rem-4", "n-a", "pager", "escalated", 1).await.unwrap();
    let second = record(&c, "rem-4", "n-b", "pager", "escalated", 2).await.unwrap();
    assert!(second > first);
    let rows = c
        .query("SELECT notification_id FROM notification_audit WHERE remediation_id = 'rem-4' ORDER BY escalation_level DESC", &[])
        .await
        .unwrap();
    let ids: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(ids, ["n-b", "n-a"]);
}

#[tokio::test]
async fn the_notification_set_brings_only_its_own_tables() {
    let db = TestDatabase::new(SETS).await.expect("test database");
    let c = db.connect().await.expect("connect");
    let row = c
        .query_one(
            "SELECT to_regclass('notification_audit') IS NOT NULL, to_regclass('audit_events') IS NOT NULL,
                    to_regclass('remediation_workflow_catalog') IS NOT NULL",
            &[],
        )
        .await
        .unwrap();
    assert_eq!((row.get::<_, bool>(0), row.get::<_, bool>(1), row.get::<_, bool>(2)), (true, false, false));
    let applied: i64 = c
        .query_one("SELECT count(*) FROM goose_db_version WHERE version_id = 21 AND is_applied", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(applied, 1, "goose sees the migration as applied");
}
