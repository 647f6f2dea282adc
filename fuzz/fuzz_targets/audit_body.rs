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
        // And one edit of it, chosen by a hash of the input: near misses of canonical bodies,
        // which the raw input rarely is (as the recogniser's own property test does).
        const CHARS: &[u8] = b"0019.eE-+\" \\,:{}[]";
        let h = data.iter().fold(0xcbf29ce484222325u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
        });
        let mut edited = body.into_bytes();
        let at = (h >> 8) as usize % (edited.len() + 1);
        let c = CHARS[(h as usize) % CHARS.len()];
        match (h >> 40) % 3 {
            0 => edited.insert(at, c),
            1 if at < edited.len() => {
                edited.remove(at);
            }
            _ if at < edited.len() => edited[at] = c,
            _ => edited.push(c),
        }
        if let Ok(edited) = String::from_utf8(edited) {
            agree(&edited);
        }
    }
});
