//! The AI analysis service against the shared schema: requests and responses across a month
//! boundary, parent references, outcome rules.

use aianalysis_e2e::{record_request, record_response, SETS};
use chrono::{Datelike, Duration, NaiveDate, TimeZone, Utc};
use e2e_migrations::TestDatabase;
use tokio_postgres::error::SqlState;

/// The last minute of the current month, UTC: a response one hour later is in the next month.
fn end_of_this_month() -> chrono::DateTime<Utc> {
    let today = Utc::now().date_naive();
    let first_next =
        NaiveDate::from_ymd_opt(today.year() + (today.month() / 12) as i32, today.month() % 12 + 1, 1).unwrap();
    Utc.from_utc_datetime(&first_next.and_hms_opt(0, 0, 0).unwrap()) - Duration::minutes(1)
}

#[tokio::test]
async fn a_response_in_the_next_month_references_its_request() {
    let db = TestDatabase::new(SETS).await.expect("test database");
    let c = db.connect().await.expect("connect");
    let at = end_of_this_month();
    let req = record_request(&c, "rem-9", at).await.expect("request");
    let resp =
        record_response(&c, "rem-9", at + Duration::hours(1), req, "success", 3_600_000).await.expect("response");
    assert_ne!(req.1.month(), resp.1.month(), "the pair straddles a month boundary");
    let rows = c
        .query(
            "SELECT r.event_type, p.event_type, r.tableoid <> p.tableoid
               FROM audit_events r JOIN audit_events p
                 ON (p.event_id, p.event_date) = (r.parent_event_id, r.parent_event_date)
              WHERE r.correlation_id = 'rem-9'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, String>(0), "aianalysis.response");
    assert_eq!(rows[0].get::<_, String>(1), "aianalysis.request");
    assert!(rows[0].get::<_, bool>(2), "request and response live in different monthly partitions");
}

#[tokio::test]
async fn a_parent_reference_needs_both_id_and_date() {
    let db = TestDatabase::new(SETS).await.expect("test database");
    let c = db.connect().await.expect("connect");
    let e = c
        .execute(
            "INSERT INTO audit_events (event_type, event_category, event_action, event_outcome, actor_type, actor_id,
                                       resource_type, resource_id, correlation_id, parent_event_id, event_data)
             VALUES ('aianalysis.response', 'analysis', 'analyze', 'success', 'service', 'aianalysis',
                     'AIAnalysis', 'r', 'r', gen_random_uuid(), '{}')",
            &[],
        )
        .await
        .expect_err("id without date");
    assert_eq!(e.code(), Some(&SqlState::CHECK_VIOLATION), "{e}");
    assert_eq!(e.as_db_error().and_then(|d| d.constraint()), Some("audit_events_parent_pair_check"));
}

#[tokio::test]
async fn a_response_to_a_request_on_another_date_is_refused() {
    let db = TestDatabase::new(SETS).await.expect("test database");
    let c = db.connect().await.expect("connect");
    let now = Utc::now();
    let req = record_request(&c, "rem-10", now).await.unwrap();
    let wrong_date = (req.0, req.1 - Duration::days(1));
    let e = record_response(&c, "rem-10", now, wrong_date, "success", 10).await.expect_err("the key includes the date");
    assert_eq!(e.code(), Some(&SqlState::FOREIGN_KEY_VIOLATION), "{e}");
}

#[tokio::test]
async fn outcomes_are_limited_and_reading_by_correlation_is_ordered() {
    let db = TestDatabase::new(SETS).await.expect("test database");
    let c = db.connect().await.expect("connect");
    let now = Utc::now();
    let req = record_request(&c, "rem-11", now - Duration::seconds(5)).await.unwrap();
    let e = record_response(&c, "rem-11", now, req, "timeout", 5000).await.expect_err("unknown outcome");
    assert_eq!(e.code(), Some(&SqlState::CHECK_VIOLATION), "{e}");
    record_response(&c, "rem-11", now, req, "failure", 5000).await.expect("failure is an outcome");
    let rows = c
        .query("SELECT event_outcome FROM audit_events WHERE correlation_id = 'rem-11' ORDER BY event_timestamp", &[])
        .await
        .unwrap();
    let outcomes: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(outcomes, ["pending", "failure"]);
}
