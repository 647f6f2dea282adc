//! [`PostgresWitness`]: checkpoints kept in a separate PostgreSQL database (or schema) that the
//! gateway reaches through a role holding only `INSERT` and `SELECT` on one table.
//!
//! The witness database's owner creates the table once ([`PostgresWitness::SCHEMA`]) and grants
//! the gateway's witness role ([`PostgresWitness::role_grants`]); that role can add checkpoints
//! and read them back, and nothing else: no `UPDATE`, `DELETE` or `TRUNCATE` (privileges, and
//! triggers that reject them even for the owner), and a trigger refuses a checkpoint whose
//! sequence is below the newest witnessed for its stream. Run it on another host, under another
//! administrator, than the audit log: it is only as independent as that.

use crate::checkpoint::Checkpoint;
use crate::store::StoredCheckpoint;
use crate::witness::{CheckpointWitness, WitnessError};
use async_trait::async_trait;
use sqlx::Row;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use std::str::FromStr;
use std::time::Duration;

/// Checkpoints witnessed in a PostgreSQL database; see the module docs.
#[derive(Debug, Clone)]
pub struct PostgresWitness {
    pool: PgPool,
    /// `postgres://user@host:port/db` without the password.
    name: String,
}

impl PostgresWitness {
    /// The witness table, its append-only triggers and the monotonic-head trigger: run by the
    /// witness database's owner (idempotent), in the schema the witness role will use.
    pub const SCHEMA: &'static str = r#"
CREATE TABLE IF NOT EXISTS audit_witness_checkpoints (
    stream_id    TEXT        NOT NULL,
    sequence     BIGINT      NOT NULL CHECK (sequence >= 0),
    head_hash    TEXT        NOT NULL,
    time         TEXT        NOT NULL,
    key_id       TEXT        NOT NULL,
    signature    TEXT        NOT NULL,
    witnessed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (stream_id, sequence)
);
CREATE OR REPLACE FUNCTION audit_witness_reject_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_witness_checkpoints is append-only';
END $$;
CREATE OR REPLACE FUNCTION audit_witness_head_forward() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext(NEW.stream_id));
    IF EXISTS (SELECT 1 FROM audit_witness_checkpoints
               WHERE stream_id = NEW.stream_id AND sequence > NEW.sequence) THEN
        RAISE EXCEPTION 'audit witness: head of % would go backwards', NEW.stream_id
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE OR REPLACE TRIGGER audit_witness_append_only
    BEFORE UPDATE OR DELETE ON audit_witness_checkpoints
    FOR EACH ROW EXECUTE FUNCTION audit_witness_reject_change();
CREATE OR REPLACE TRIGGER audit_witness_no_truncate
    BEFORE TRUNCATE ON audit_witness_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION audit_witness_reject_change();
CREATE OR REPLACE TRIGGER audit_witness_forward
    BEFORE INSERT ON audit_witness_checkpoints
    FOR EACH ROW EXECUTE FUNCTION audit_witness_head_forward();
"#;

    /// The grants that give `role` exactly what the witness needs in `schema`: `INSERT` and
    /// `SELECT` on the table (run by its owner after [`SCHEMA`](Self::SCHEMA)).
    pub fn role_grants(schema: &str, role: &str) -> Vec<String> {
        let q = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
        let (schema, role) = (q(schema), q(role));
        vec![
            format!("GRANT USAGE ON SCHEMA {schema} TO {role}"),
            format!("REVOKE ALL ON {schema}.audit_witness_checkpoints FROM {role}"),
            format!("GRANT SELECT, INSERT ON {schema}.audit_witness_checkpoints TO {role}"),
        ]
    }

    /// Connects to the witness database (the table must exist; this never creates it, since
    /// the witness role must not be able to).
    pub async fn connect(url: &str) -> Result<Self, WitnessError> {
        let options = PgConnectOptions::from_str(url).map_err(|e| {
            WitnessError::unavailable("postgres witness", "parsing the witness URL", e)
        })?;
        let name = format!(
            "postgres://{}@{}:{}/{}",
            options.get_username(),
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or("")
        );
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .map_err(|e| WitnessError::unavailable(&name, "connecting", e))?;
        Ok(Self { pool, name })
    }
}

/// The SQLSTATE of a database error, if any.
fn sqlstate(e: &sqlx::Error) -> Option<String> {
    e.as_database_error()
        .and_then(|d| d.code())
        .map(|c| c.into_owned())
}

#[async_trait]
impl CheckpointWitness for PostgresWitness {
    fn name(&self) -> &str {
        &self.name
    }

    async fn witness(&self, cp: &Checkpoint) -> Result<(), WitnessError> {
        let time = cp
            .time_text()
            .map_err(|e| WitnessError::corrupt(&self.name, e.to_string()))?;
        let sequence = i64::try_from(cp.sequence)
            .map_err(|_| WitnessError::rejected(&self.name, "sequence beyond 2^63"))?;
        let inserted = sqlx::query(
            "INSERT INTO audit_witness_checkpoints
                 (stream_id, sequence, head_hash, time, key_id, signature)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&cp.stream_id)
        .bind(sequence)
        .bind(&cp.head_hash)
        .bind(&time)
        .bind(&cp.key_id)
        .bind(&cp.signature)
        .execute(&self.pool)
        .await;
        match inserted {
            Ok(_) => Ok(()),
            Err(e) => match sqlstate(&e).as_deref() {
                // Already witnessed at this sequence: a retry if it is the same head.
                Some("23505") => {
                    let existing: Option<String> = sqlx::query_scalar(
                        "SELECT head_hash FROM audit_witness_checkpoints
                         WHERE stream_id = $1 AND sequence = $2",
                    )
                    .bind(&cp.stream_id)
                    .bind(sequence)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(|e| WitnessError::unavailable(&self.name, "reading back", e))?;
                    if existing.as_deref() == Some(cp.head_hash.as_str()) {
                        Ok(())
                    } else {
                        Err(WitnessError::rejected(
                            &self.name,
                            format!(
                                "stream {} already has another head witnessed at sequence {}",
                                cp.stream_id, cp.sequence
                            ),
                        ))
                    }
                }
                Some("23514") => Err(WitnessError::rejected(
                    &self.name,
                    format!(
                        "stream {} head would go backwards to {}",
                        cp.stream_id, cp.sequence
                    ),
                )),
                _ => Err(WitnessError::unavailable(
                    &self.name,
                    "storing the checkpoint",
                    e,
                )),
            },
        }
    }

    async fn checkpoints(&self, stream_id: &str) -> Result<Vec<Checkpoint>, WitnessError> {
        let rows = sqlx::query(
            "SELECT stream_id, sequence, head_hash, time, key_id, signature
             FROM audit_witness_checkpoints WHERE stream_id = $1 ORDER BY sequence",
        )
        .bind(stream_id)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| WitnessError::unavailable(&self.name, "reading checkpoints", e))?;
        rows.iter()
            .map(|r| {
                let stored = StoredCheckpoint {
                    stream_id: r.try_get(0).map_err(|e| self.decode(e))?,
                    sequence: r.try_get(1).map_err(|e| self.decode(e))?,
                    head_hash: r.try_get(2).map_err(|e| self.decode(e))?,
                    time: r.try_get(3).map_err(|e| self.decode(e))?,
                    key_id: r.try_get(4).map_err(|e| self.decode(e))?,
                    signature: r.try_get(5).map_err(|e| self.decode(e))?,
                };
                Checkpoint::from_stored(&stored).map_err(|d| WitnessError::corrupt(&self.name, d))
            })
            .collect()
    }
}

impl PostgresWitness {
    fn decode(&self, e: sqlx::Error) -> WitnessError {
        WitnessError::corrupt(&self.name, format!("decoding a row: {e}"))
    }
}
