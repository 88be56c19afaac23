-- Audit events: every action taken on a resource, range-partitioned on the event's date, one
-- partition per month.
-- Partitions are not created here: the `audit` set in sets.toml declares them, and
-- `cargo xtask partitions roll` (run by e2e-setup) keeps them rolling from today's date.

-- +goose Up
CREATE TABLE audit_events (
    event_id           UUID         NOT NULL DEFAULT gen_random_uuid(),
    event_version      VARCHAR(10)  NOT NULL DEFAULT '1.0',
    event_timestamp    TIMESTAMPTZ  NOT NULL DEFAULT now(),
    event_date         DATE         NOT NULL DEFAULT CURRENT_DATE,
    event_type         VARCHAR(100) NOT NULL,
    event_category     VARCHAR(50)  NOT NULL,
    event_action       VARCHAR(50)  NOT NULL,
    event_outcome      VARCHAR(20)  NOT NULL,
    actor_type         VARCHAR(50)  NOT NULL,
    actor_id           VARCHAR(255) NOT NULL,
    actor_ip           INET,
    resource_type      VARCHAR(100) NOT NULL,
    resource_id        VARCHAR(255) NOT NULL,
    resource_name      VARCHAR(255),
    correlation_id     VARCHAR(255) NOT NULL,
    parent_event_id    UUID,
    parent_event_date  DATE,
    trace_id           VARCHAR(64),
    span_id            VARCHAR(32),
    namespace          VARCHAR(253),
    cluster_name       VARCHAR(255),
    event_data         JSONB        NOT NULL,
    event_metadata     JSONB,
    severity           VARCHAR(20),
    duration_ms        INTEGER,
    error_code         VARCHAR(50),
    error_message      TEXT,
    retention_days     INTEGER      NOT NULL DEFAULT 2555,
    is_sensitive       BOOLEAN      NOT NULL DEFAULT false,

    PRIMARY KEY (event_id, event_date),
    CONSTRAINT audit_events_outcome_check
        CHECK (event_outcome IN ('success', 'failure', 'pending')),
    CONSTRAINT audit_events_duration_check
        CHECK (duration_ms IS NULL OR duration_ms >= 0),
    CONSTRAINT audit_events_parent_pair_check
        CHECK ((parent_event_id IS NULL) = (parent_event_date IS NULL)),
    CONSTRAINT fk_audit_events_parent
        FOREIGN KEY (parent_event_id, parent_event_date)
        REFERENCES audit_events (event_id, event_date)
        ON DELETE RESTRICT
) PARTITION BY RANGE (event_date);

COMMENT ON TABLE audit_events IS
    'Audit trail of actions on resources; monthly range partitions on event_date (see migrations/sets.toml)';

CREATE INDEX idx_audit_events_event_timestamp ON audit_events (event_timestamp DESC);
CREATE INDEX idx_audit_events_correlation_id  ON audit_events (correlation_id, event_timestamp DESC);
CREATE INDEX idx_audit_events_event_type      ON audit_events (event_type, event_timestamp DESC);
CREATE INDEX idx_audit_events_resource        ON audit_events (resource_type, resource_id, event_timestamp DESC);
CREATE INDEX idx_audit_events_actor           ON audit_events (actor_type, actor_id, event_timestamp DESC);
CREATE INDEX idx_audit_events_outcome         ON audit_events (event_outcome, event_timestamp DESC);
CREATE INDEX idx_audit_events_event_date      ON audit_events (event_date);
CREATE INDEX idx_audit_events_parent          ON audit_events (parent_event_id, parent_event_date)
    WHERE parent_event_id IS NOT NULL;
CREATE INDEX idx_audit_events_event_data_gin  ON audit_events USING GIN (event_data);

-- +goose Down
DROP TABLE IF EXISTS audit_events CASCADE;
