//! Bounded capture of a job's output: keeps at most `cap` bytes, counts (but drops) the rest,
//! so a job that floods stdout can neither exhaust the gateway's memory nor block on a full pipe.

/// One output stream (stdout or stderr) captured up to a byte cap.
#[derive(Debug)]
pub(crate) struct BoundedOutput {
    buf: Vec<u8>,
    cap: usize,
    truncated: bool,
}

impl BoundedOutput {
    /// An empty capture keeping at most `cap` bytes.
    pub(crate) fn new(cap: usize) -> Self {
        // Never pre-allocate the whole cap: most jobs print little, and the cap may be large.
        Self {
            buf: Vec::with_capacity(cap.min(8 * 1024)),
            cap,
            truncated: false,
        }
    }

    /// Appends what fits under the cap and flags the rest as dropped.
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        let room = self.cap.saturating_sub(self.buf.len());
        if bytes.len() > room {
            self.truncated = true;
        }
        let take = bytes.len().min(room);
        self.buf.extend_from_slice(&bytes[..take]);
    }

    /// The captured text (lossy UTF-8, never longer than the cap) and whether anything was dropped.
    pub(crate) fn finish(self) -> (String, bool) {
        let Self {
            mut buf,
            cap,
            mut truncated,
        } = self;
        // A cut at the cap can split a multi-byte character: drop the incomplete tail rather
        // than turning it into a replacement character.
        if truncated
            && let Err(e) = std::str::from_utf8(&buf)
            && e.error_len().is_none()
        {
            buf.truncate(e.valid_up_to());
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
}
