//! # agent-gateway
//!
//! A secure, least-privilege gateway through which AI agents run infrastructure actions. This
//! facade crate re-exports the member crates:
//!
//! - [`core`] (`gateway-core`): types, traits, the [`Gateway`] pipeline, embedded identity and
//!   broker, test doubles;
//! - [`opa`] (`gateway-opa`): policy deciders;
//! - [`runners`] (`gateway-runners`): job runners;
//! - [`audit`] (`gateway-audit`): audit sinks and chain verification.

pub mod embedded;
pub mod reference;

pub use gateway_audit as audit;
pub use gateway_core as core;
pub use gateway_opa as opa;
pub use gateway_runners as runners;

pub use gateway_core::{
    ActionCatalog, ActionDef, ActionOutcome, ActionRequest, Credential, Gateway, GatewayConfig,
    GatewayError,
};
