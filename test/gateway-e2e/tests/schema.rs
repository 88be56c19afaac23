//! The gateway against the shared schema: signals recorded in every partition of the window, the
//! default partition, JSONB search, required fields.

use chrono::{Months, NaiveDate, Utc};
use e2e_migrations::TestDatabase;
use gateway_e2e::{record_signal, SETS};
use serde_json::json;
use tokio_postgres::error::SqlState;

fn today() -> NaiveDate {
    Utc::now().date_naive()
}

#[tokio::test]
async fn signals_land_in_every_month_of_the_window() {
    let db = TestDatabase::new(SETS).await.expect("test database");
    let c = db.connect().await.expect("connect");
    // The audit set keeps 1 month behind, the current one and 3 ahead.
    let first = today().checked_sub_months(Months::new(1)).unwrap();
    let mut dates = Vec::new();
    for m in 0..5 {
        let d = first.checked_add_months(Months::new(m)).unwrap();
        record_signal(&c, &format!("sig-{m}"), d, &json!({"alert": "KubePodCrashLooping"}))
            .await
            .unwrap_or_else(|e| panic!("{d}: {e}"));
        dates.push(d);
    }
    let rows = c
        .query(
            "SELECT DISTINCT p.tableoid::regclass::text, pg_get_expr(c.relpartbound, c.oid)
               FROM audit_events p JOIN pg_class c ON c.oid = p.tableoid",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        rows.len(),
        5,
        "five months, five partitions: {:?}",
        rows.iter().map(|r| r.get::<_, String>(0)).collect::<Vec<_>>()
    );
    assert!(rows.iter().all(|r| r.get::<_, String>(1).starts_with("FOR VALUES FROM")), "none in the default partition");
}

#[tokio::test]
async fn a_signal_outside_the_window_goes_to_the_default_partition() {
    let db = TestDatabase::new(SETS).await.expect("test database");
    let c = db.connect().await.expect("connect");
    let long_ago = NaiveDate::from_ymd_opt(2001, 1, 1).unwrap();
    let (id, date) = record_signal(&c, "sig-old", long_ago, &json!({"alert": "old"})).await.expect("kept, not lost");
    let bound: String = c
        .query_one(
            "SELECT pg_get_expr(c.relpartbound, c.oid) FROM audit_events p JOIN pg_class c ON c.oid = p.tableoid
              WHERE p.event_id = $1 AND p.event_date = $2",
            &[&id, &date],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(bound, "DEFAULT");
}

#[tokio::test]
async fn signals_are_found_by_their_content() {
    let db = TestDatabase::new(SETS).await.expect("test database");
    let c = db.connect().await.expect("connect");
    record_signal(&c, "sig-a", today(), &json!({"alert": "HighMemory", "labels": {"team": "payments"}})).await.unwrap();
    record_signal(&c, "sig-b", today(), &json!({"alert": "HighMemory", "labels": {"team": "search"}})).await.unwrap();
    record_signal(&c, "sig-c", today(), &json!({"alert": "DiskFull", "labels": {"team": "payments"}})).await.unwrap();
    let rows = c
        .query(
            "SELECT correlation_id FROM audit_events WHERE event_data @> $1 ORDER BY correlation_id",
            &[&json!({"labels": {"team": "payments"}})],
        )
        .await
        .unwrap();
    let ids: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(ids, ["sig-a", "sig-c"]);
    let ip: String = c
        .query_one("SELECT host(actor_ip) FROM audit_events WHERE correlation_id = 'sig-a'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(ip, "10.0.0.7");
}

#[tokio::test]
async fn event_data_and_correlation_are_required() {
    let db = TestDatabase::new(SETS).await.expect("test database");
    let c = db.connect().await.expect("connect");
    let e = c
        .execute(
            "INSERT INTO audit_events (event_type, event_category, event_action, event_outcome, actor_type, actor_id,
                                       resource_type, resource_id, correlation_id)
             VALUES ('gateway.signal.received', 'signal', 'receive', 'success', 'service', 'gateway', 'Signal', 'x', 'x')",
            &[],
        )
        .await
        .expect_err("event_data is NOT NULL");
    assert_eq!(e.code(), Some(&SqlState::NOT_NULL_VIOLATION), "{e}");
    let e = record_signal(&c, "", today(), &json!({})).await.map(|_| ());
    assert!(e.is_ok(), "an empty correlation id is a value, not a missing one: {e:?}");
}
