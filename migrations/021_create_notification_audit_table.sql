-- Notification audit: every notification sent for a remediation, and what became of it.

-- +goose Up
CREATE TABLE notification_audit (
    id                BIGSERIAL    PRIMARY KEY,
    remediation_id    VARCHAR(255) NOT NULL,
    notification_id   VARCHAR(255) NOT NULL,
    recipient         VARCHAR(255) NOT NULL,
    channel           VARCHAR(50)  NOT NULL,
    message_summary   TEXT         NOT NULL,
    status            VARCHAR(50)  NOT NULL,
    sent_at           TIMESTAMPTZ  NOT NULL,
    delivery_status   TEXT,
    error_message     TEXT,
    escalation_level  INTEGER      NOT NULL DEFAULT 0,
    created_at        TIMESTAMPTZ  NOT NULL DEFAULT now(),
    updated_at        TIMESTAMPTZ  NOT NULL DEFAULT now(),

    CONSTRAINT uq_notification_audit_notification_id UNIQUE (notification_id),
    CONSTRAINT notification_audit_status_check
        CHECK (status IN ('sent', 'failed', 'acknowledged', 'escalated')),
    CONSTRAINT notification_audit_escalation_level_check
        CHECK (escalation_level >= 0)
);

CREATE INDEX idx_notification_audit_remediation_id ON notification_audit (remediation_id);
CREATE INDEX idx_notification_audit_channel        ON notification_audit (channel);
CREATE INDEX idx_notification_audit_status         ON notification_audit (status);
CREATE INDEX idx_notification_audit_sent_at        ON notification_audit (sent_at DESC);

-- +goose Down
DROP TABLE IF EXISTS notification_audit;
