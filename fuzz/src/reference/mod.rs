//! One module per reference: JSON with duplicate keys counted, exact numbers, base64url, JCS.

pub mod base64url;
pub mod exact;
pub mod jcs;
pub mod json;
