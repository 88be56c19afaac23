//! The workflow execution service against the shared schema: runs and steps across partitions,
//! parent references, catalog uniqueness and status rules.

use chrono::{Datelike, Months, NaiveDate, Utc};
use e2e_migrations::TestDatabase;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;
use workflowexecution_e2e::{record, register_workflow, ExecutionEvent, SETS};

fn today() -> NaiveDate {
    Utc::now().date_naive()
}

fn event<'a>(correlation_id: &'a str, event_type: &'a str, event_date: NaiveDate) -> ExecutionEvent<'a> {
    ExecutionEvent { correlation_id, event_type, event_date, outcome: "success", parent: None, duration_ms: Some(5) }
}

async fn partition_of(client: &Client, id: uuid::Uuid, date: NaiveDate) -> String {
    client
        .query_one(
            "SELECT tableoid::regclass::text FROM audit_events WHERE event_id = $1 AND event_date = $2",
            &[&id, &date],
        )
        .await
        .expect("the event is readable")
        .get(0)
}

fn sqlstate(e: &tokio_postgres::Error) -> Option<&SqlState> {
    e.code()
}

#[tokio::test]
async fn a_run_and_its_steps_span_months_and_partitions() {
    let db = TestDatabase::new(SETS).await.expect("test database");
    let c = db.connect().await.expect("connect");
    // A run started last month whose steps finish this month and next month.
    let start = today().checked_sub_months(Months::new(1)).unwrap();
    let run = record(&c, &event("rr-1", "workflow.started", start)).await.expect("run recorded");
    let mut steps = Vec::new();
    for (i, date) in [today(), today().checked_add_months(Months::new(1)).unwrap()].into_iter().enumerate() {
        let step_type = format!("workflow.step.{i}");
        let mut e = event("rr-1", &step_type, date);
        e.parent = Some(run);
        steps.push(record(&c, &e).await.expect("step recorded"));
    }
    // Each month's rows are in that month's partition (named audit_events_YYYY_MM).
    for (id, date) in std::iter::once(run).chain(steps.iter().copied()) {
        assert_eq!(partition_of(&c, id, date).await, format!("audit_events_{:04}_{:02}", date.year(), date.month()));
    }
    // The service reads a run back by correlation id, oldest first, steps pointing at the run.
    let rows = c
        .query(
            "SELECT event_type, parent_event_id FROM audit_events WHERE correlation_id = 'rr-1' ORDER BY event_timestamp",
            &[],
        )
        .await
        .unwrap();
    let types: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(types, ["workflow.started", "workflow.step.0", "workflow.step.1"]);
    assert!(rows[1..].iter().all(|r| r.get::<_, Option<uuid::Uuid>>(1) == Some(run.0)));
}

#[tokio::test]
async fn a_step_must_reference_an_existing_run() {
    let db = TestDatabase::new(SETS).await.expect("test database");
    let c = db.connect().await.expect("connect");
    let mut orphan = event("rr-2", "workflow.step.0", today());
    orphan.parent = Some((uuid::Uuid::new_v4(), today()));
    let e = record(&c, &orphan).await.expect_err("a step of an unknown run must be refused");
    assert_eq!(sqlstate(&e), Some(&SqlState::FOREIGN_KEY_VIOLATION), "{e}");
}

#[tokio::test]
async fn a_run_with_steps_cannot_be_deleted() {
    let db = TestDatabase::new(SETS).await.expect("test database");
    let c = db.connect().await.expect("connect");
    let run = record(&c, &event("rr-3", "workflow.started", today())).await.unwrap();
    let mut step = event("rr-3", "workflow.step.0", today());
    step.parent = Some(run);
    record(&c, &step).await.unwrap();
    let e = c
        .execute("DELETE FROM audit_events WHERE event_id = $1 AND event_date = $2", &[&run.0, &run.1])
        .await
        .expect_err("ON DELETE RESTRICT");
    assert_eq!(sqlstate(&e), Some(&SqlState::FOREIGN_KEY_VIOLATION), "{e}");
}

#[tokio::test]
async fn outcomes_and_durations_are_checked() {
    let db = TestDatabase::new(SETS).await.expect("test database");
    let c = db.connect().await.expect("connect");
    let mut bad_outcome = event("rr-4", "workflow.started", today());
    bad_outcome.outcome = "maybe";
    let e = record(&c, &bad_outcome).await.expect_err("unknown outcome");
    assert_eq!(sqlstate(&e), Some(&SqlState::CHECK_VIOLATION), "{e}");
    let mut negative = event("rr-4", "workflow.step.0", today());
    negative.duration_ms = Some(-1);
    let e = record(&c, &negative).await.expect_err("negative duration");
    assert_eq!(sqlstate(&e), Some(&SqlState::CHECK_VIOLATION), "{e}");
    let mut pending = event("rr-4", "workflow.started", today());
    pending.outcome = "pending";
    record(&c, &pending).await.expect("pending is a valid outcome");
}

#[tokio::test]
async fn workflow_versions_are_unique_per_name() {
    let db = TestDatabase::new(SETS).await.expect("test database");
    let c = db.connect().await.expect("connect");
    register_workflow(&c, "restart-pod", "1.0.0", "active").await.expect("first version");
    register_workflow(&c, "restart-pod", "1.1.0", "active").await.expect("another version of the same workflow");
    register_workflow(&c, "scale-up", "1.0.0", "active").await.expect("the same version of another workflow");
    let e = register_workflow(&c, "restart-pod", "1.0.0", "disabled").await.expect_err("duplicate name and version");
    assert_eq!(sqlstate(&e), Some(&SqlState::UNIQUE_VIOLATION), "{e}");
    assert_eq!(e.as_db_error().and_then(|d| d.constraint()), Some("uq_workflow_name_version"));
}

#[tokio::test]
async fn workflow_status_is_limited_and_updates_touch_updated_at() {
    let db = TestDatabase::new(SETS).await.expect("test database");
    let c = db.connect().await.expect("connect");
    for status in ["active", "disabled", "deprecated", "archived"] {
        register_workflow(&c, &format!("wf-{status}"), "1", status).await.expect(status);
    }
    let e = register_workflow(&c, "wf-x", "1", "paused").await.expect_err("unknown status");
    assert_eq!(sqlstate(&e), Some(&SqlState::CHECK_VIOLATION), "{e}");
    // The service deprecates a workflow; the trigger moves updated_at (now() is the transaction's
    // start, so update in a later transaction than the insert).
    let id = register_workflow(&c, "wf-touch", "1", "active").await.unwrap();
    let before: chrono::DateTime<Utc> = c
        .query_one("SELECT updated_at FROM remediation_workflow_catalog WHERE workflow_id = $1", &[&id])
        .await
        .unwrap()
        .get(0);
    let after: chrono::DateTime<Utc> = c
        .query_one(
            "UPDATE remediation_workflow_catalog SET status = 'deprecated' WHERE workflow_id = $1 RETURNING updated_at",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert!(after > before, "updated_at {after} should be later than {before}");
    let labels: serde_json::Value = c
        .query_one("SELECT labels FROM remediation_workflow_catalog WHERE labels @> '{\"team\": \"sre\"}' AND workflow_id = $1", &[&id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(labels["team"], "sre");
}

#[tokio::test]
async fn each_test_gets_its_own_database() {
    let a = TestDatabase::new(SETS).await.expect("test database");
    let b = TestDatabase::new(SETS).await.expect("test database");
    assert_ne!(a.name(), b.name());
    let (ca, cb) = (a.connect().await.unwrap(), b.connect().await.unwrap());
    register_workflow(&ca, "only-in-a", "1", "active").await.unwrap();
    let n: i64 = cb.query_one("SELECT count(*) FROM remediation_workflow_catalog", &[]).await.unwrap().get(0);
    assert_eq!(n, 0, "a write in one test's database must not show in another's");
    // Dropping it removes it from the server.
    let name = a.name().to_string();
    drop(ca);
    a.close().await.expect("dropped");
    let left: i64 = cb.query_one("SELECT count(*) FROM pg_database WHERE datname = $1", &[&name]).await.unwrap().get(0);
    assert_eq!(left, 0, "{name} should be gone");
}
