//! The audit verifier's one-pass body recogniser (`gateway-audit`, module `body`) against its
//! slow path, the definition: whenever the recogniser decides a text is a canonical record
//! body, parsing and re-encoding it must give the text back, with the same stream, sequence,
//! kind and query-column copies. Inputs that parse as a record are also re-encoded, so the
//! recogniser sees canonical bodies (its accepting paths) and near misses of them.
#![no_main]

use gateway_audit::fuzzing::{canonical, fast, slow};
use libfuzzer_sys::fuzz_target;

fn agree(text: &str) {
    if let Some(fast) = fast(text) {
        assert_eq!(
            Some(&fast),
            slow(text).as_ref(),
            "the recogniser accepted a body the definition does not: {text:?}"
        );
        assert!(fast.copies.is_ok(), "a recognised body's strings decode");
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    agree(text);
    if let Some(body) = canonical(text) {
        // What the encoder writes is canonical by definition.
        assert!(
            slow(&body).is_some(),
            "a re-encoded body is not canonical: {body:?}"
        );
        agree(&body);
    }
});
