//! The one connection a store appends through.
//!
//! Appends do not go through the pool: `sqlx` pings a pooled connection when it is taken and
//! again when it is given back, two database round trips per batch on top of the batch's own.
//! A store keeps one connection for appends instead (a stream has one writer, and SQLite takes
//! one writer at a time anyway), connects it on first use, pings it only after a long idle
//! spell, and drops it whenever a use did not finish cleanly (an error the caller could not
//! clean up after, or a cancelled future), so the next use starts on a fresh connection.

use sqlx::{ConnectOptions, Connection};
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, MutexGuard};

/// After this long unused, a connection is pinged before use (the server may have dropped it).
const IDLE_PING: Duration = Duration::from_secs(30);

/// A lazily connected, exclusively used connection.
#[derive(Debug)]
pub(crate) struct WriteConnection<C: Connection> {
    options: <C as Connection>::Options,
    slot: Mutex<Slot<C>>,
}

#[derive(Debug)]
struct Slot<C> {
    conn: Option<C>,
    last_used: Instant,
}

impl<C: Connection> WriteConnection<C> {
    /// Connects with `options` on first use.
    pub(crate) fn new(options: <C as Connection>::Options) -> Self {
        Self {
            options,
            slot: Mutex::new(Slot {
                conn: None,
                last_used: Instant::now(),
            }),
        }
    }

    /// Waits for the connection (connecting, or pinging after a long idle spell) and lends it
    /// out.
    pub(crate) async fn lease(&self) -> Result<Lease<'_, C>, sqlx::Error> {
        let mut slot = self.slot.lock().await;
        let idle = slot.last_used.elapsed() >= IDLE_PING;
        let kept = match slot.conn.take() {
            Some(mut conn) if idle => match conn.ping().await {
                Ok(()) => Some(conn),
                Err(e) => {
                    tracing::info!(error = %e, "audit write connection went away; reconnecting");
                    None
                }
            },
            conn => conn,
        };
        let conn = match kept {
            Some(conn) => conn,
            None => self.options.connect().await?,
        };
        Ok(Lease { slot, conn })
    }
}

/// Exclusive use of the connection. It serves the next use only if [`keep`](Self::keep) is
/// called once a use finished cleanly; a lease dropped otherwise (after an error that left the
/// connection in doubt, or in a future cancelled mid-query) closes it, and the next lease
/// connects afresh.
pub(crate) struct Lease<'a, C: Connection> {
    slot: MutexGuard<'a, Slot<C>>,
    conn: C,
}

impl<C: Connection> Lease<'_, C> {
    /// The connection.
    pub(crate) fn conn(&mut self) -> &mut C {
        &mut self.conn
    }

    /// The use finished cleanly: the connection serves the next lease.
    pub(crate) fn keep(self) {
        let Lease { mut slot, conn } = self;
        slot.conn = Some(conn);
        slot.last_used = Instant::now();
    }
}
