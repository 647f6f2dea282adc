//! The params schema as written, and why what is served is byte for byte the same.
//!
//! The HTTP catalog and MCP `tools/list` serialise the schema with `serde_json` (compact, keys
//! in sorted order, numbers and strings as it writes them). So that what an agent is shown is
//! exactly the file's text, the loader requires the text, with the whitespace between JSON
//! tokens removed, to be those very bytes, and otherwise points at the first byte that would
//! differ (a key out of order, `1e3` or `1.0` written for what `serde_json` writes as `1000.0`
//! or `1.0`, an escape where `serde_json` writes the character, a duplicate key).

/// `text` without the whitespace outside strings, and for each kept byte its offset in `text`.
pub(crate) fn minify(text: &str) -> (String, Vec<usize>) {
    let mut out = String::with_capacity(text.len());
    let mut offsets = Vec::with_capacity(text.len());
    let (mut in_string, mut escaped) = (false, false);
    for (i, c) in text.char_indices() {
        if !in_string && matches!(c, ' ' | '\t' | '\n' | '\r') {
            continue;
        }
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
        }
        out.push(c);
        offsets.extend(std::iter::repeat_n(i, c.len_utf8()));
    }
    (out, offsets)
}

/// Checks that `value` serialises to `text` minified. On a difference, returns the offset in
/// `text` of the first differing byte and the bytes the gateway would serve there.
pub(crate) fn served_as_written(
    text: &str,
    value: &serde_json::Value,
) -> Result<(), (usize, String)> {
    let served = serde_json::to_string(value).unwrap_or_default();
    let (written, offsets) = minify(text);
    if served == written {
        return Ok(());
    }
    let at = served
        .bytes()
        .zip(written.bytes())
        .position(|(a, b)| a != b)
        .unwrap_or_else(|| served.len().min(written.len()));
    let offset = offsets.get(at).or(offsets.last()).copied().unwrap_or(0);
    let mut from = at.min(served.len());
    while !served.is_char_boundary(from) {
        from -= 1;
    }
    let context: String = served[from..].chars().take(40).collect();
    Err((offset, context))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<(), (usize, String)> {
        served_as_written(text, &serde_json::from_str(text).unwrap())
    }

    #[test]
    fn whitespace_between_tokens_is_insignificant_inside_strings_it_is_not() {
        assert!(check("{\n  \"a\": [1, 2],\n  \"b\": \"x y\"\n}").is_ok());
        assert_eq!(minify("{ \"a b\" : \"\\\" c\" }").0, "{\"a b\":\"\\\" c\"}");
    }

    #[test]
    fn what_serde_json_would_write_differently_is_refused_where_it_differs() {
        // keys out of order: at "a"
        let (at, served) = check("{\"b\": 1, \"a\": 2}").unwrap_err();
        assert_eq!(at, 2);
        assert!(served.starts_with("a\":2"), "{served}");
        for bad in [
            "{\"n\": 1e3}",
            "{\"n\": 1.50}",
            "{\"s\": \"\\u00e9\"}",
            "{\"a\": 1, \"a\": 2}",
        ] {
            assert!(check(bad).is_err(), "{bad}");
        }
    }
}
