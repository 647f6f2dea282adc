//! Quoting for the statements PostgreSQL cannot take bind parameters in (`CREATE ROLE`,
//! `GRANT`, `COMMENT ON`, …): the same rules as the server's `quote_ident` and
//! `quote_literal`, applied to every name and value this crate writes into SQL, even the ones
//! the scope grammar already restricts.

/// Quotes an identifier: always double-quoted, embedded `"` doubled (`a"b` → `"a""b"`), so the
/// result is exactly one identifier whatever the input.
pub fn quote_ident(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// Quotes a string literal like the server's `quote_literal`: embedded `'` doubled; if the text
/// has a backslash, backslashes are doubled too and the literal is written `E'…'`, so it means
/// the same whatever `standard_conforming_strings` is.
pub fn quote_literal(value: &str) -> String {
    let body = value.replace('\'', "''");
    if body.contains('\\') {
        format!("E'{}'", body.replace('\\', "\\\\"))
    } else {
        format!("'{body}'")
    }
}

/// A schema-qualified table name, both parts quoted.
pub fn qualified(schema: &str, table: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(table))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("t"), "\"t\"");
        assert_eq!(
            quote_ident("x\"; DROP TABLE y; --"),
            "\"x\"\"; DROP TABLE y; --\""
        );
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal("a\\'b"), "E'a\\\\''b'");
        assert_eq!(qualified("s", "t\""), "\"s\".\"t\"\"\"");
    }
}
