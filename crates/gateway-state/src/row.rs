//! What the SQLite and PostgreSQL stores share: a record as a table row (its JSON and the
//! lookup columns derived from it), decoding a stored row, the bounded retry of transient
//! database failures, and the mapping of database errors onto [`StateError`].

use gateway_core::state::{ActionKey, ActionRecord, Phase, StateError};
use std::future::Future;
use std::time::{Duration, Instant};
use time::OffsetDateTime;

/// The table both backends keep action state in.
pub const TABLE: &str = "gateway_action_state";

/// A record as it is written: the lookup columns, derived from the record on every write so
/// they always agree with its JSON, and the JSON itself.
#[derive(Debug)]
pub(crate) struct Row {
    /// `agent`: the agent id.
    pub agent: String,
    /// `id`: the request id, hyphenated lower-case (its text sorts as the UUID does).
    pub id: String,
    /// `phase`: [`Phase::as_str`](gateway_core::state::Phase::as_str).
    pub phase: &'static str,
    /// `created_at`: the claim time in Unix nanoseconds.
    pub created_at: i64,
    /// `expires_at`: the end of the retention in Unix nanoseconds (saturated), or NULL while
    /// the action lives.
    pub expires_at: Option<i64>,
    /// `record`: the whole record as JSON.
    pub record: String,
}

impl Row {
    /// The row of `record`. A claim time outside what the column holds (years 1677 to 2262)
    /// is refused: the expiry check compares it exactly.
    pub(crate) fn of(record: &ActionRecord) -> Result<Self, StateError> {
        let created_at = unix_nanos(record.created_at).ok_or_else(|| {
            StateError::invalid_input(format!(
                "action {} was claimed at {}, outside the years 1677 to 2262 the state store \
                 keeps: check the gateway's clock",
                record.key, record.created_at
            ))
        })?;
        let record_json = serde_json::to_string(record).map_err(|e| {
            StateError::internal(
                format!("cannot encode the record of action {} as JSON", record.key),
                e,
            )
        })?;
        Ok(Self {
            agent: record.key.agent.as_str().to_owned(),
            id: record.key.id.to_string(),
            phase: record.phase.as_str(),
            created_at,
            expires_at: record.expires_at.map(saturating_unix_nanos),
            record: record_json,
        })
    }
}

/// `at` in Unix nanoseconds, if an `i64` holds it.
pub(crate) fn unix_nanos(at: OffsetDateTime) -> Option<i64> {
    i64::try_from(at.unix_timestamp_nanos()).ok()
}

/// `at` in Unix nanoseconds, clamped to what an `i64` holds. Used for expiry times and prune
/// cut-offs: every claim time fits ([`Row::of`]), so a clamped expiry compares with it as the
/// true one would (one past 2262 is later than any claim, one before 1677 earlier).
pub(crate) fn saturating_unix_nanos(at: OffsetDateTime) -> i64 {
    let nanos = at.unix_timestamp_nanos();
    i64::try_from(nanos).unwrap_or(if nanos < 0 { i64::MIN } else { i64::MAX })
}

/// A limit as a SQL `LIMIT` value.
pub(crate) fn db_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// Decodes the stored JSON of the row of `agent`'s request `id`, checking that it is the
/// record of that key. Bad stored data is an [`StateError::Internal`] naming the key, never a
/// panic.
pub(crate) fn decode(agent: &str, id: &str, json: &str) -> Result<ActionRecord, StateError> {
    let record: ActionRecord = serde_json::from_str(json).map_err(|e| {
        StateError::internal(
            format!(
                "the stored record of action {id} of {agent} is not a valid action record \
                 ({e}): its row in {TABLE} is damaged; restore the row from a backup, or delete \
                 it (which frees the request id for a new action)"
            ),
            e,
        )
    })?;
    if record.key.agent.as_str() != agent || record.key.id.to_string() != id {
        return Err(StateError::internal_msg(format!(
            "the row of action {id} of {agent} in {TABLE} holds the record of action {}: \
             the table was altered outside the gateway; restore the row from a backup",
            record.key
        )));
    }
    Ok(record)
}

/// A stored row's value could not be read as the expected type.
pub(crate) fn undecodable(key: &ActionKey, e: sqlx::Error) -> StateError {
    StateError::internal(
        format!(
            "the stored row of action {key} in {TABLE} cannot be read ({e}): it is damaged; \
             restore it from a backup, or delete it (which frees the request id)"
        ),
        e,
    )
}

/// Decodes a row of an `in_phase` listing (`agent`, `id` as text, `record`), refusing a record
/// whose JSON disagrees with the phase column it was found by.
pub(crate) fn decode_listed<R: sqlx::Row>(row: &R, phase: Phase) -> Result<ActionRecord, StateError>
where
    usize: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let columns: Result<(String, String, String), sqlx::Error> = row
        .try_get(0)
        .and_then(|agent| Ok((agent, row.try_get(1)?, row.try_get(2)?)));
    let (agent, id, json) = columns.map_err(|e| {
        StateError::internal(
            format!(
                "a row in phase {phase} of {TABLE} cannot be read ({e}): it is damaged; find it \
                 with SELECT agent, id FROM {TABLE} WHERE phase = '{phase}' and restore it from \
                 a backup"
            ),
            e,
        )
    })?;
    let record = decode(&agent, &id, &json)?;
    if record.phase != phase {
        return Err(StateError::internal_msg(format!(
            "the row of action {} in {TABLE} is in phase {phase} but its record says {}: the \
             table was altered outside the gateway; restore the row from a backup",
            record.key, record.phase
        )));
    }
    Ok(record)
}

/// Why one attempt at a store operation failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The database failed; retried when the backend calls the error transient.
    Db(sqlx::Error),
    /// Anything else (a refused change, a missing or damaged record): returned as it is.
    State(StateError),
}

impl From<sqlx::Error> for Failure {
    fn from(e: sqlx::Error) -> Self {
        Self::Db(e)
    }
}

impl From<StateError> for Failure {
    fn from(e: StateError) -> Self {
        Self::State(e)
    }
}

/// How a backend retries transient failures and describes database errors.
pub(crate) struct Backend {
    /// At most this many attempts per operation.
    pub attempts: u32,
    /// No new attempt starts once this long has passed since the first.
    pub window: Duration,
    /// Whether an error is transient (lock contention, a serialisation failure): worth
    /// running the whole operation again.
    pub retryable: fn(&sqlx::Error) -> bool,
    /// Whether an error means the database cannot work right now (connection, I/O, locks,
    /// disk): [`StateError::Unavailable`]; anything else is [`StateError::Internal`].
    pub unavailable: fn(&sqlx::Error) -> bool,
    /// What the operator can do about an error, if the backend knows.
    pub hint: fn(&sqlx::Error) -> Option<&'static str>,
}

impl Backend {
    /// Runs `op` until it succeeds, fails for good, or the attempts or the window run out;
    /// `what` describes the operation in errors ("cannot claim action …").
    pub(crate) async fn run<T, F, Fut>(
        &self,
        what: impl Fn() -> String,
        mut op: F,
    ) -> Result<T, StateError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let started = Instant::now();
        let mut attempt = 1;
        loop {
            match op().await {
                Ok(value) => return Ok(value),
                Err(Failure::State(e)) => return Err(e),
                Err(Failure::Db(e))
                    if (self.retryable)(&e)
                        && attempt < self.attempts
                        && started.elapsed() < self.window =>
                {
                    tracing::debug!(attempt, error = %e, "state store: {}; retrying", what());
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
                Err(Failure::Db(e)) => {
                    let what = if attempt > 1 {
                        format!("{} (after {attempt} attempts)", what())
                    } else {
                        what()
                    };
                    return Err(self.error(what, e));
                }
            }
        }
    }

    /// `e` as a [`StateError`] of the right kind, its message saying what failed and, where
    /// known, what to do; the database error is kept as the source.
    pub(crate) fn error(&self, what: String, e: sqlx::Error) -> StateError {
        let message = match (self.hint)(&e) {
            Some(hint) => format!("{what}: {e}: {hint}"),
            None => format!("{what}: {e}"),
        };
        if (self.unavailable)(&e) {
            StateError::unavailable(message, e)
        } else {
            StateError::internal(message, e)
        }
    }
}

/// The pause before attempt `attempt + 1`: doubling from 5 ms up to 160 ms, with up to as much
/// again of jitter so that contending processes do not retry in step.
fn backoff(attempt: u32) -> Duration {
    let base = 5u64 << attempt.saturating_sub(1).min(5);
    let jitter = u64::from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos()),
    ) % (base * 1000);
    Duration::from_millis(base) + Duration::from_micros(jitter)
}

/// The errors of any backend that mean the database could not be reached or used.
pub(crate) fn connection_failure(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::BeginFailed
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nanoseconds_fit_for_claims_and_saturate_for_expiries() {
        let t = time::macros::datetime!(2024-05-06 07:08:09.123456789 UTC);
        assert_eq!(unix_nanos(t), Some(1_714_979_289_123_456_789));
        let far = time::macros::datetime!(3000-01-01 00:00 UTC);
        assert_eq!(unix_nanos(far), None);
        assert_eq!(saturating_unix_nanos(far), i64::MAX);
        let early = time::macros::datetime!(1600-01-01 00:00 UTC);
        assert_eq!(saturating_unix_nanos(early), i64::MIN);
    }

    #[test]
    fn backoff_grows_and_stays_bounded() {
        assert!(backoff(1) < Duration::from_millis(11));
        assert!(backoff(3) >= Duration::from_millis(20));
        assert!(backoff(100) < Duration::from_millis(321));
    }

    #[test]
    fn bad_json_names_the_key() {
        let err = decode(
            "agent:a",
            "0190c8b6-0000-7000-8000-000000000000",
            "{not json",
        )
        .expect_err("garbage");
        assert!(matches!(err, StateError::Internal { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains("agent:a"), "{text}");
        assert!(
            text.contains("0190c8b6-0000-7000-8000-000000000000"),
            "{text}"
        );
    }
}
