//! Bounded capture of a job's output, shared by every runner: keeps at most `cap` bytes, counts
//! (but drops) the rest, so a job that floods stdout can neither exhaust the gateway's memory
//! nor block on a full pipe, and every backend reports the same text and the same
//! `truncated` flag for the same bytes.
//!
//! The rules, for the bytes `b` pushed in total:
//! - the text is never longer than `cap` bytes;
//! - it is a prefix of `String::from_utf8_lossy(b)`: a character cut by the cap is dropped
//!   whole, never turned into a replacement character (so the text says nothing the job did
//!   not say), and invalid bytes become U+FFFD as in any lossy decoding;
//! - `truncated` is true exactly when the text is not all of `String::from_utf8_lossy(b)`.
//!
//! ```
//! use gateway_core::output::BoundedOutput;
//!
//! let mut out = BoundedOutput::new(4);
//! out.push("abc".as_bytes());
//! out.push("é!".as_bytes()); // `é` is two bytes: it would end at byte 5
//! assert_eq!(out.finish(), ("abc".to_string(), true));
//! ```

/// One output stream (stdout or stderr) captured up to a byte cap.
#[derive(Debug)]
pub struct BoundedOutput {
    buf: Vec<u8>,
    cap: usize,
    truncated: bool,
}

impl BoundedOutput {
    /// An empty capture keeping at most `cap` bytes.
    pub fn new(cap: usize) -> Self {
        // Never pre-allocate the whole cap: most jobs print little, and the cap may be large.
        Self {
            buf: Vec::with_capacity(cap.min(8 * 1024)),
            cap,
            truncated: false,
        }
    }

    /// Captures `bytes` in one go: `new(cap)`, `push(bytes)`, `finish()`.
    pub fn capture(bytes: &[u8], cap: usize) -> (String, bool) {
        let mut out = Self::new(cap);
        out.push(bytes);
        out.finish()
    }

    /// Appends what fits under the cap and flags the rest as dropped.
    pub fn push(&mut self, bytes: &[u8]) {
        let room = self.cap.saturating_sub(self.buf.len());
        if bytes.len() > room {
            self.truncated = true;
        }
        let take = bytes.len().min(room);
        self.buf.extend_from_slice(&bytes[..take]);
    }

    /// The captured text (lossy UTF-8, never longer than the cap) and whether anything was
    /// dropped.
    pub fn finish(self) -> (String, bool) {
        let Self {
            mut buf,
            cap,
            mut truncated,
        } = self;
        // A cut at the cap can split a multi-byte character: drop the incomplete tail rather
        // than turning it into a replacement character. Only the last chunk can hold such a
        // tail, whatever invalid bytes come before it.
        if truncated
            && let Some(last) = buf.utf8_chunks().last()
            && !last.invalid().is_empty()
            && std::str::from_utf8(last.invalid()).is_err_and(|e| e.error_len().is_none())
        {
            let keep = buf.len() - last.invalid().len();
            buf.truncate(keep);
        }
        let mut text = String::from_utf8_lossy(&buf).into_owned();
        // Replacement characters are 3 bytes each, so invalid input can grow past the cap.
        if text.len() > cap {
            let mut end = cap;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
            truncated = true;
        }
        (text, truncated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn keeps_everything_under_the_cap() {
        let mut out = BoundedOutput::new(10);
        out.push(b"hello");
        out.push(b"world");
        assert_eq!(out.finish(), ("helloworld".to_string(), false));
    }

    #[test]
    fn cuts_at_the_cap_and_flags_it() {
        let mut out = BoundedOutput::new(4);
        out.push(b"abc");
        out.push(b"def");
        out.push(b"ghi");
        assert_eq!(out.finish(), ("abcd".to_string(), true));
    }

    #[test]
    fn never_splits_a_character_at_the_cap() {
        let mut out = BoundedOutput::new(4);
        out.push("abcé".as_bytes()); // 5 bytes: é is 2
        let (text, truncated) = out.finish();
        assert_eq!(text, "abc");
        assert!(truncated);
    }

    #[test]
    fn invalid_bytes_never_grow_past_the_cap() {
        let mut out = BoundedOutput::new(4);
        out.push(&[0xff, 0xff, 0xff, 0xff]);
        let (text, truncated) = out.finish();
        assert!(text.len() <= 4, "{} bytes", text.len());
        assert!(truncated);
    }

    /// Moved from the Kubernetes runner's own truncation, with its assertions.
    #[test]
    fn capture_respects_the_byte_limit_even_for_cut_characters() {
        let (s, t) = BoundedOutput::capture("héllo".as_bytes(), 2);
        assert!(t);
        assert!(s.len() <= 2, "{s:?}");
        let (s, t) = BoundedOutput::capture(b"abc", 3);
        assert_eq!((s.as_str(), t), ("abc", false));
    }

    /// A cut character after an earlier invalid sequence is still dropped whole: the text
    /// stays a prefix of the lossy decoding of everything pushed.
    #[test]
    fn a_cut_character_after_invalid_bytes_is_dropped() {
        // F1 80 80 is an incomplete 4-byte sequence (one U+FFFD), then `a`, then 😀 cut
        // after 3 of its 4 bytes: 7 bytes kept, and 3 + 1 + 3 = 7 bytes of text if the cut
        // character became U+FFFD.
        let mut bytes = vec![0xf1, 0x80, 0x80, b'a'];
        bytes.extend_from_slice("😀".as_bytes());
        let (text, truncated) = BoundedOutput::capture(&bytes, 7);
        assert_eq!(text, "\u{fffd}a");
        assert!(truncated);
    }

    /// The reference the property tests compare against: the lossy decoding of all the bytes,
    /// whose prefix the capture must be.
    fn lossy(chunks: &[Vec<u8>]) -> String {
        String::from_utf8_lossy(&chunks.concat()).into_owned()
    }

    fn capture_chunks(chunks: &[Vec<u8>], cap: usize) -> (String, bool) {
        let mut out = BoundedOutput::new(cap);
        for c in chunks {
            out.push(c);
        }
        out.finish()
    }

    /// Bytes that are often, but not always, valid UTF-8: whole characters of every length,
    /// their cut prefixes (incomplete sequences, which decode to one U+FFFD each), stray
    /// continuation bytes and bytes that are never UTF-8, in any order.
    fn mostly_utf8() -> impl Strategy<Value = Vec<u8>> {
        const PIECES: &[&[u8]] = &[
            b"a",
            "é".as_bytes(),
            "€".as_bytes(),
            "😀".as_bytes(),
            &[0xc3],             // é cut after 1 byte
            &[0xe2, 0x82],       // € cut after 2
            &[0xf0, 0x9f],       // 😀 cut after 2
            &[0xf0, 0x9f, 0x98], // 😀 cut after 3
            &[0x80],             // a stray continuation byte
            &[0xff],             // never UTF-8
        ];
        prop_oneof![
            proptest::collection::vec(proptest::sample::select(PIECES), 0..8)
                .prop_map(|p| p.concat()),
            proptest::collection::vec(any::<u8>(), 0..12),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Never longer than the cap; a prefix of the lossy decoding of everything pushed;
        /// `truncated` exactly when it is not all of it; and independent of how the bytes were
        /// split into pushes.
        #[test]
        fn capture_is_a_capped_prefix_of_the_lossy_decoding(
            chunks in proptest::collection::vec(mostly_utf8(), 0..6),
            cap in 0usize..40,
        ) {
            let (text, truncated) = capture_chunks(&chunks, cap);
            let whole = lossy(&chunks);
            prop_assert!(text.len() <= cap, "{} > {cap}", text.len());
            prop_assert!(whole.starts_with(&text), "{text:?} is not a prefix of {whole:?}");
            prop_assert_eq!(truncated, text != whole);
            let joined = vec![chunks.concat()];
            prop_assert_eq!(capture_chunks(&joined, cap), (text, truncated));
        }

        /// For valid UTF-8 the capture is exactly the longest prefix that ends on a character
        /// boundary within the cap: nothing is lost that did not have to be.
        #[test]
        fn valid_text_keeps_the_longest_prefix_that_fits(
            chunks in proptest::collection::vec("[a-zé€😀]{0,8}", 0..6),
            cap in 0usize..40,
        ) {
            let whole: String = chunks.concat();
            let bytes: Vec<Vec<u8>> = chunks.iter().map(|c| c.as_bytes().to_vec()).collect();
            let mut end = whole.len().min(cap);
            while !whole.is_char_boundary(end) {
                end -= 1;
            }
            let (text, truncated) = capture_chunks(&bytes, cap);
            prop_assert_eq!(text.as_str(), &whole[..end]);
            prop_assert_eq!(truncated, end < whole.len());
        }
    }
}
