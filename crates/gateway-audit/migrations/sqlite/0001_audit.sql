-- gateway-audit schema, SQLite. Append-only: triggers abort UPDATE and DELETE.
CREATE TABLE IF NOT EXISTS audit_records (
    stream_id      TEXT    NOT NULL,
    sequence       INTEGER NOT NULL CHECK (sequence >= 0),
    prev_hash      TEXT    NOT NULL,
    hash           TEXT    NOT NULL,
    -- The event as JSON text, exactly as hashed. Authoritative.
    event          TEXT    NOT NULL,
    -- Copies for querying (not hashed).
    event_time     TEXT    NOT NULL,
    correlation_id TEXT    NOT NULL,
    kind           TEXT    NOT NULL,
    agent_id       TEXT,
    action         TEXT    NOT NULL,
    resource       TEXT    NOT NULL,
    outcome        TEXT,
    PRIMARY KEY (stream_id, sequence)
);
CREATE INDEX IF NOT EXISTS audit_records_agent ON audit_records (agent_id, event_time);
CREATE INDEX IF NOT EXISTS audit_records_correlation ON audit_records (correlation_id);
CREATE INDEX IF NOT EXISTS audit_records_time ON audit_records (event_time);

CREATE TABLE IF NOT EXISTS audit_checkpoints (
    stream_id  TEXT    NOT NULL,
    sequence   INTEGER NOT NULL CHECK (sequence >= 0),
    head_hash  TEXT    NOT NULL,
    time       TEXT    NOT NULL,
    key_id     TEXT    NOT NULL,
    signature  TEXT    NOT NULL,
    PRIMARY KEY (stream_id, sequence)
);

CREATE TRIGGER IF NOT EXISTS audit_records_no_update BEFORE UPDATE ON audit_records
BEGIN SELECT RAISE(ABORT, 'audit_records is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_records_no_delete BEFORE DELETE ON audit_records
BEGIN SELECT RAISE(ABORT, 'audit_records is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
BEGIN SELECT RAISE(ABORT, 'audit_checkpoints is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
BEGIN SELECT RAISE(ABORT, 'audit_checkpoints is append-only'); END;
