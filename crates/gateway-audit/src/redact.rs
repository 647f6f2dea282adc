//! Secret redaction, applied to every event before it is sealed: a redacted value never reaches
//! the database or the hash.
//!
//! The redactor is gateway-core's ([`gateway_core::redact`]): the gateway applies it before any
//! sink sees an event, and these sinks apply it once more before sealing, as defence in depth
//! for events that reach a sink some other way.

pub use gateway_core::redact::{REDACTED, RedactPathError, Redactor};
