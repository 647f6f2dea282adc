//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`). Not a public API: hidden
//! from the docs, and free to change.

use crate::error::ApiError;
use gateway_core::ActionRequest;

/// What `POST /v1/actions` makes of a request body (after the size cap), before it submits the
/// request: the handler's own parser.
pub fn action_body(body: &[u8]) -> Result<ActionRequest, ApiError> {
    crate::http::action_request(body)
}
