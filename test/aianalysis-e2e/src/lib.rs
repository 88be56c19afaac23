//! The AI analysis service's end-to-end tests: its audit trail.
//!
//! An analysis is recorded as a request event and a response event that references it as its
//! parent; both carry the remediation's correlation id. The schema comes from the shared
//! migrations through [`e2e_migrations::TestDatabase`]; nothing here creates tables.

use chrono::{DateTime, NaiveDate, Utc};
use tokio_postgres::{Client, Error};
use uuid::Uuid;

/// The migration sets this service's tests need.
pub const SETS: &[&str] = &["audit"];

/// The key of an audit event: (event id, event date).
pub type EventKey = (Uuid, NaiveDate);

/// Records an analysis request at `at`; returns its key.
pub async fn record_request(client: &Client, correlation_id: &str, at: DateTime<Utc>) -> Result<EventKey, Error> {
    insert(client, correlation_id, at, "aianalysis.request", "pending", None, None).await
}

/// Records the analysis response to `request` at `at`, with its duration and outcome.
pub async fn record_response(
    client: &Client,
    correlation_id: &str,
    at: DateTime<Utc>,
    request: EventKey,
    outcome: &str,
    duration_ms: i32,
) -> Result<EventKey, Error> {
    insert(client, correlation_id, at, "aianalysis.response", outcome, Some(request), Some(duration_ms)).await
}

async fn insert(
    client: &Client,
    correlation_id: &str,
    at: DateTime<Utc>,
    event_type: &str,
    outcome: &str,
    parent: Option<EventKey>,
    duration_ms: Option<i32>,
) -> Result<EventKey, Error> {
    let row = client
        .query_one(
            "INSERT INTO audit_events (event_timestamp, event_date, event_type, event_category, event_action,
                                       event_outcome, actor_type, actor_id, resource_type, resource_id,
                                       correlation_id, parent_event_id, parent_event_date, event_data, duration_ms)
             VALUES ($1, ($1 AT TIME ZONE 'UTC')::date, $2, 'analysis', 'analyze', $3, 'service', 'aianalysis',
                     'AIAnalysis', $4, $4, $5, $6, $7, $8)
             RETURNING event_id, event_date",
            &[
                &at,
                &event_type,
                &outcome,
                &correlation_id,
                &parent.map(|p| p.0),
                &parent.map(|p| p.1),
                &serde_json::json!({"model": "test", "confidence": 0.9}),
                &duration_ms,
            ],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}
