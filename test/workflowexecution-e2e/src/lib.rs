//! The workflow execution service's end-to-end tests: its audit trail and the workflow catalog.
//!
//! The service records every step of a remediation in `audit_events` (a workflow run is a parent
//! event, each step a child referencing it) and reads workflows from
//! `remediation_workflow_catalog`. The schema comes from the shared migrations through
//! [`e2e_migrations::TestDatabase`]; nothing here creates tables.

use chrono::NaiveDate;
use tokio_postgres::{Client, Error};
use uuid::Uuid;

/// The migration sets this service's tests need.
pub const SETS: &[&str] = &["audit", "workflow"];

/// A workflow execution event, as the service writes it.
#[derive(Debug, Clone)]
pub struct ExecutionEvent<'a> {
    /// The remediation the workflow runs for (the correlation id).
    pub correlation_id: &'a str,
    /// `workflow.started`, `workflow.step.completed`, ...
    pub event_type: &'a str,
    /// The day it happened (the partition key).
    pub event_date: NaiveDate,
    /// `success`, `failure` or `pending`.
    pub outcome: &'a str,
    /// The run this step belongs to: (event id, event date) of the parent event.
    pub parent: Option<(Uuid, NaiveDate)>,
    /// How long the step took.
    pub duration_ms: Option<i32>,
}

/// Records an execution event; returns its key (event id, event date).
pub async fn record(client: &Client, e: &ExecutionEvent<'_>) -> Result<(Uuid, NaiveDate), Error> {
    let row = client
        .query_one(
            "INSERT INTO audit_events (event_date, event_timestamp, event_type, event_category, event_action,
                                       event_outcome, actor_type, actor_id, resource_type, resource_id,
                                       correlation_id, parent_event_id, parent_event_date, event_data, duration_ms)
             VALUES ($1, $1::date + time '10:00', $2, 'workflow', 'execute', $3, 'service', 'workflowexecution',
                     'WorkflowExecution', $4, $4, $5, $6, $7, $8)
             RETURNING event_id, event_date",
            &[
                &e.event_date,
                &e.event_type,
                &e.outcome,
                &e.correlation_id,
                &e.parent.map(|p| p.0),
                &e.parent.map(|p| p.1),
                &serde_json::json!({ "step": e.event_type }),
                &e.duration_ms,
            ],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}

/// Registers a workflow in the catalog; returns its id.
pub async fn register_workflow(client: &Client, name: &str, version: &str, status: &str) -> Result<Uuid, Error> {
    let row = client
        .query_one(
            "INSERT INTO remediation_workflow_catalog (workflow_name, version, content, content_hash, status, labels)
             VALUES ($1, $2, 'steps: []', md5(concat($1::varchar, '/', $2::varchar)), $3, '{\"team\": \"sre\"}')
             RETURNING workflow_id",
            &[&name, &version, &status],
        )
        .await?;
    Ok(row.get(0))
}
