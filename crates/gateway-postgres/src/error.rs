//! This crate's error type and its mapping onto the core's backend-neutral [`BrokerError`].

use crate::scope::ScopeError;
use gateway_core::BrokerError;

/// What went wrong in the PostgreSQL broker.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PgBrokerError {
    /// A scope did not parse (see [`crate::scope`]).
    #[error("refused scope: {0}")]
    Scope(#[from] ScopeError),
    /// The broker's settings or a grant's fields are invalid.
    #[error("invalid input: {0}")]
    Invalid(String),
    /// A statement or connection failed.
    #[error("{what}: {source}")]
    Database {
        /// What the broker was doing.
        what: String,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// A `GRANT` ran but the role does not hold the privilege (PostgreSQL only warns when the
    /// granting role lacks the grant option).
    #[error("the admin role could not grant {scope}: it needs the privilege WITH GRANT OPTION")]
    NotGranted {
        /// The scope that is not in effect.
        scope: String,
    },
    /// The role's sessions did not end in time after `pg_terminate_backend`.
    #[error("sessions of role {role} still open after termination")]
    SessionsRemain {
        /// The role.
        role: String,
    },
}

impl PgBrokerError {
    pub(crate) fn db(what: impl Into<String>, source: sqlx::Error) -> Self {
        Self::Database {
            what: what.into(),
            source,
        }
    }

    /// The SQLSTATE of a database error, if this is one.
    pub fn sqlstate(&self) -> Option<String> {
        match self {
            Self::Database {
                source: sqlx::Error::Database(e),
                ..
            } => e.code().map(|c| c.into_owned()),
            _ => None,
        }
    }
}

impl PgBrokerError {
    /// Whether a retry may succeed: concurrent changes of the same catalog row (two grants or
    /// revocations changing one database's ACL at once fail with "tuple concurrently updated"),
    /// serialisation failures and deadlocks.
    pub(crate) fn is_concurrent_update(&self) -> bool {
        match self {
            Self::Database {
                source: sqlx::Error::Database(e),
                ..
            } => match e.code().as_deref() {
                Some("40001" | "40P01") => true,
                Some("XX000") => e.message().contains("concurrently"),
                _ => false,
            },
            _ => false,
        }
    }
}

/// The backend-neutral class of a driver error.
fn db_class(e: &sqlx::Error) -> gateway_core::ErrorKind {
    use gateway_core::ErrorKind as K;
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => K::Unavailable,
        sqlx::Error::Configuration(_) => K::InvalidInput,
        sqlx::Error::Database(d) => match d.code().as_deref() {
            // 08: connection exceptions; 28: the admin cannot log in; 53: out of resources;
            // 57P: the server is shutting down; 42501: the admin lacks a privilege. Either way
            // the backend refuses to work right now.
            Some(c) if c.starts_with("08") || c.starts_with("28") || c.starts_with("53") => {
                K::Unavailable
            }
            Some(c) if c.starts_with("57P") => K::Unavailable,
            Some("42501") => K::Unavailable,
            // undefined database, schema, table
            Some("3D000" | "3F000" | "42P01") => K::NotFound,
            // dependent objects still exist, serialization failure, deadlock, duplicate object
            Some("2BP01" | "40001" | "40P01" | "42710") => K::Conflict,
            Some("57014") => K::Timeout,
            _ => K::Internal,
        },
        _ => K::Internal,
    }
}

impl From<PgBrokerError> for BrokerError {
    fn from(e: PgBrokerError) -> Self {
        use gateway_core::ErrorKind as K;
        let message = e.to_string();
        match &e {
            PgBrokerError::Scope(_) | PgBrokerError::Invalid(_) => {
                BrokerError::InvalidInput { message }
            }
            PgBrokerError::NotGranted { .. } => BrokerError::unavailable(message, e),
            PgBrokerError::SessionsRemain { .. } => BrokerError::Conflict { message },
            PgBrokerError::Database { source, .. } => match db_class(source) {
                K::Unavailable => BrokerError::unavailable(message, e),
                K::InvalidInput => BrokerError::InvalidInput { message },
                K::NotFound => BrokerError::NotFound { message },
                K::Conflict => BrokerError::Conflict { message },
                K::Timeout => BrokerError::internal(message, e),
                _ => BrokerError::internal(message, e),
            },
        }
    }
}
