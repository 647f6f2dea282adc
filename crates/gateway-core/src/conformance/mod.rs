//! Conformance suites: one per trait, taking `&dyn Trait`, that every backend runs against
//! itself (the in-memory doubles included). Enabled by the `conformance` feature.
//!
//! Each suite is an `async fn` that panics with a descriptive message on the first violation,
//! like a test, so a backend's test is one line:
//!
//! ```ignore
//! #[tokio::test]
//! async fn conformance() {
//!     gateway_core::conformance::audit::run(&my_sink).await;
//! }
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod audit;
pub mod broker;
pub mod identity;
pub mod policy;
pub mod redaction;
pub mod runner;
