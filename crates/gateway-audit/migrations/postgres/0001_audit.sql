-- gateway-audit schema, PostgreSQL. Append-only: triggers reject UPDATE, DELETE and TRUNCATE
-- (even for the owner); grant the gateway's role only SELECT and INSERT.
CREATE TABLE IF NOT EXISTS audit_records (
    stream_id      TEXT        NOT NULL,
    sequence       BIGINT      NOT NULL CHECK (sequence >= 0),
    prev_hash      TEXT        NOT NULL,
    hash           TEXT        NOT NULL,
    -- The event as JSON text (not JSONB, which reformats numbers), exactly as hashed.
    event          TEXT        NOT NULL,
    -- Copies for querying (not hashed).
    event_time     TIMESTAMPTZ NOT NULL,
    correlation_id TEXT        NOT NULL,
    kind           TEXT        NOT NULL,
    agent_id       TEXT,
    action         TEXT        NOT NULL,
    resource       TEXT        NOT NULL,
    outcome        TEXT,
    PRIMARY KEY (stream_id, sequence)
);
CREATE INDEX IF NOT EXISTS audit_records_agent ON audit_records (agent_id, event_time);
CREATE INDEX IF NOT EXISTS audit_records_correlation ON audit_records (correlation_id);
CREATE INDEX IF NOT EXISTS audit_records_time ON audit_records (event_time);

CREATE TABLE IF NOT EXISTS audit_checkpoints (
    stream_id  TEXT   NOT NULL,
    sequence   BIGINT NOT NULL CHECK (sequence >= 0),
    head_hash  TEXT   NOT NULL,
    time       TEXT   NOT NULL,
    key_id     TEXT   NOT NULL,
    signature  TEXT   NOT NULL,
    PRIMARY KEY (stream_id, sequence)
);

CREATE OR REPLACE FUNCTION gateway_audit_reject_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'gateway-audit: % on % is not allowed (append-only)', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE OR REPLACE TRIGGER audit_records_append_only
    BEFORE UPDATE OR DELETE ON audit_records
    FOR EACH ROW EXECUTE FUNCTION gateway_audit_reject_change();
CREATE OR REPLACE TRIGGER audit_records_no_truncate
    BEFORE TRUNCATE ON audit_records
    FOR EACH STATEMENT EXECUTE FUNCTION gateway_audit_reject_change();
CREATE OR REPLACE TRIGGER audit_checkpoints_append_only
    BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION gateway_audit_reject_change();
CREATE OR REPLACE TRIGGER audit_checkpoints_no_truncate
    BEFORE TRUNCATE ON audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION gateway_audit_reject_change();
