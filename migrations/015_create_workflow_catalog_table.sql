-- The remediation workflow catalog: one row per workflow name and version.

-- +goose Up
CREATE TABLE remediation_workflow_catalog (
    workflow_id       UUID         PRIMARY KEY DEFAULT gen_random_uuid(),
    workflow_name     VARCHAR(255) NOT NULL,
    version           VARCHAR(50)  NOT NULL,
    description       TEXT,
    content           TEXT         NOT NULL,
    content_hash      VARCHAR(64)  NOT NULL,
    labels            JSONB        NOT NULL DEFAULT '{}'::jsonb,
    status            VARCHAR(20)  NOT NULL DEFAULT 'active',
    container_image   TEXT,
    container_digest  VARCHAR(100),
    parameters        JSONB,
    created_at        TIMESTAMPTZ  NOT NULL DEFAULT now(),
    updated_at        TIMESTAMPTZ  NOT NULL DEFAULT now(),

    CONSTRAINT uq_workflow_name_version UNIQUE (workflow_name, version),
    CONSTRAINT remediation_workflow_catalog_status_check
        CHECK (status IN ('active', 'disabled', 'deprecated', 'archived'))
);

CREATE INDEX idx_workflow_catalog_labels_gin ON remediation_workflow_catalog USING GIN (labels);
CREATE INDEX idx_workflow_catalog_status     ON remediation_workflow_catalog (status);
CREATE INDEX idx_workflow_catalog_name       ON remediation_workflow_catalog (workflow_name);

-- Keep updated_at current on every update.
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION remediation_workflow_catalog_touch() RETURNS trigger AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
-- +goose StatementEnd

CREATE TRIGGER trg_workflow_catalog_updated_at
    BEFORE UPDATE ON remediation_workflow_catalog
    FOR EACH ROW EXECUTE FUNCTION remediation_workflow_catalog_touch();

-- +goose Down
DROP TABLE IF EXISTS remediation_workflow_catalog;
DROP FUNCTION IF EXISTS remediation_workflow_catalog_touch();
