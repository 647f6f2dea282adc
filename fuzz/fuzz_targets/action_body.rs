//! The body of `POST /v1/actions` (`gateway-server`): `parse_exact`, then the `ActionRequest`
//! shape, then the catalog's checks. Never a panic; a refusal is a typed `invalid_input` error
//! (HTTP 422); an accepted request survives the trip back to JSON unchanged (what a policy and
//! the audit trail see is what was accepted).
#![no_main]

use gateway_core::{
    ActionCatalog, ActionDef, ActionRequest, AgentIdentity, ErrorKind, JobBuildError,
};
use gateway_server::fuzzing::action_body;
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;

/// Jobs are never built here: only the checks before them run.
fn no_job(_: &ActionRequest, _: &AgentIdentity) -> Result<gateway_core::JobSpec, JobBuildError> {
    Err(JobBuildError::new("not built while fuzzing"))
}

static CATALOG: LazyLock<ActionCatalog> = LazyLock::new(|| {
    ActionCatalog::new()
        .register(ActionDef::new("fuzz.act", "fuzzing", no_job).with_max_params_bytes(256))
        .register(ActionDef::new("k8s.scale", "fuzzing", no_job))
});

fuzz_target!(|data: &[u8]| {
    match action_body(data) {
        Ok(request) => {
            let text = serde_json::to_vec(&request).expect("a request serialises");
            let again = action_body(&text);
            assert!(
                again.as_ref().is_ok_and(|r| *r == request),
                "an accepted request does not survive JSON: {again:?}"
            );
            if let Err(e) = CATALOG.validate(&request) {
                assert_eq!(e.kind(), ErrorKind::InvalidInput);
            }
        }
        Err(e) => {
            assert_eq!(e.kind, ErrorKind::InvalidInput.as_str());
            assert_eq!(e.status.as_u16(), 422);
            assert!(e.correlation_id.is_none());
        }
    }
});
