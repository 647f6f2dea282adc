//! Conformance suites: one per trait, taking `&dyn Trait`, that every backend runs against
//! itself (the in-memory doubles included). Enabled by the `conformance` feature.
//!
//! Each suite is a module of named cases, each an `async fn` that panics with a descriptive
//! message on the first violation, like a test, plus a `run_all` that runs every case in order
//! (the model is `object_store`'s `integration` module). A backend runs the whole suite in one
//! line, or, when it cannot support a case (a runner without cancellation, say), runs the cases
//! it does support and says in its test why it leaves the others out:
//!
//! ```
//! # #[cfg(feature = "testing")]
//! # async fn demo() {
//! use gateway_core::conformance;
//! use gateway_core::testing::MemoryAuditSink;
//!
//! let sink = MemoryAuditSink::new();
//! conformance::audit::run_all(&sink).await;
//! // Or case by case:
//! conformance::audit::appends_are_gapless_and_read_back(&sink).await;
//! conformance::audit::concurrent_appends_get_distinct_sequences(&sink).await;
//! # }
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod audit;
pub mod broker;
pub mod identity;
pub mod policy;
pub mod redaction;
pub mod runner;
pub mod state;
