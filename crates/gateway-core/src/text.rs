//! Bounding text that came from outside (a caller's action name, a schema library's message)
//! before it is stored or returned.

/// `s` cut to at most `max` bytes at a character boundary, with `…` appended when cut.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::truncate;

    #[test]
    fn cuts_at_a_character_boundary_and_marks_the_cut() {
        assert_eq!(truncate("short", 8), "short");
        assert_eq!(truncate("abcdef", 3), "abc…");
        // "é" is two bytes: a cut inside it falls back to before it.
        assert_eq!(truncate("aéb", 2), "a…");
    }
}
