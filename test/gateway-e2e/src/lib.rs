//! The gateway service's end-to-end tests: its audit trail.
//!
//! The gateway records every signal it receives in `audit_events`, the signal itself in
//! `event_data` (JSONB, searched with `@>` through the GIN index). The schema comes from the
//! shared migrations through [`e2e_migrations::TestDatabase`]; nothing here creates tables.

use chrono::NaiveDate;
use tokio_postgres::{Client, Error};
use uuid::Uuid;

/// The migration sets this service's tests need.
pub const SETS: &[&str] = &["audit"];

/// Records a received signal as an audit event dated `date`; returns (event id, event date).
pub async fn record_signal(
    client: &Client,
    correlation_id: &str,
    date: NaiveDate,
    signal: &serde_json::Value,
) -> Result<(Uuid, NaiveDate), Error> {
    let row = client
        .query_one(
            "INSERT INTO audit_events (event_date, event_timestamp, event_type, event_category, event_action,
                                       event_outcome, actor_type, actor_id, actor_ip, resource_type, resource_id,
                                       correlation_id, namespace, event_data, severity)
             VALUES ($1, $1::date + time '08:30', 'gateway.signal.received', 'signal', 'receive', 'success',
                     'service', 'gateway', '10.0.0.7', 'Signal', $2, $2, 'prod', $3, 'info')
             RETURNING event_id, event_date",
            &[&date, &correlation_id, signal],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}
