//! The notification service's end-to-end tests: the notification audit table.
//!
//! The service records each notification it sends for a remediation in `notification_audit` and
//! updates its status as it is acknowledged or escalated. The schema comes from the shared
//! migrations through [`e2e_migrations::TestDatabase`]; nothing here creates tables.

use tokio_postgres::{Client, Error};

/// The migration sets this service's tests need.
pub const SETS: &[&str] = &["notification"];

/// Records a sent notification; returns its row id.
pub async fn record_sent(
    client: &Client,
    remediation_id: &str,
    notification_id: &str,
    channel: &str,
) -> Result<i64, Error> {
    record(client, remediation_id, notification_id, channel, "sent", 0).await
}

/// Records a notification with an explicit status and escalation level; returns its row id.
pub async fn record(
    client: &Client,
    remediation_id: &str,
    notification_id: &str,
    channel: &str,
    status: &str,
    escalation_level: i32,
) -> Result<i64, Error> {
    let row = client
        .query_one(
            "INSERT INTO notification_audit (remediation_id, notification_id, recipient, channel, message_summary,
                                             status, sent_at, escalation_level)
             VALUES ($1, $2, 'oncall@example.com', $3, 'pod restarted', $4, now(), $5)
             RETURNING id",
            &[&remediation_id, &notification_id, &channel, &status, &escalation_level],
        )
        .await?;
    Ok(row.get(0))
}

/// Sets a notification's status (acknowledged, escalated, ...); returns the rows changed.
pub async fn set_status(client: &Client, notification_id: &str, status: &str) -> Result<u64, Error> {
    client
        .execute(
            "UPDATE notification_audit SET status = $2, updated_at = now() WHERE notification_id = $1",
            &[&notification_id, &status],
        )
        .await
}
