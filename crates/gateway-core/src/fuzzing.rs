//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`), reaching code that is
//! private on purpose. Not a public API: hidden from the docs, and free to change.

use crate::audit::AuditError;
use serde_json::Value;

/// The audit chain's RFC 8785 (JCS) encoding of `value`, as `canonical_body` writes it.
pub fn jcs(value: &Value) -> Result<Vec<u8>, AuditError> {
    let mut out = Vec::new();
    crate::audit::jcs::write_value(&mut out, value)?;
    Ok(out)
}
