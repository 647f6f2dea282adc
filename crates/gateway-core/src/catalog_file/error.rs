//! The one error of the catalog file loader. Every refusal says what is wrong in the words of
//! the documented format (`docs/catalog.md`), which action and field it is in, and where in the
//! file when the position is known, so that an operator can fix the file without reading code.

use crate::error::{BoxError, ErrorKind};
use std::fmt;

/// What is wrong with a catalog file; each is documented in `docs/catalog.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Problem {
    /// The file could not be read.
    Io,
    /// The text is not TOML.
    NotToml,
    /// A field the format does not define.
    UnknownField,
    /// A required field is absent.
    MissingField,
    /// A field holds a value of the wrong type.
    WrongType,
    /// Two actions have the same name, or a name is empty.
    BadName,
    /// `params` is not JSON, or is JSON Schema that does not compile.
    BadSchema,
    /// `params` is JSON the gateway would not serve byte for byte as written (see
    /// `docs/catalog.md`, "Byte-identical").
    SchemaNotAsServed,
    /// The job template uses a param the schema does not define.
    UndefinedParam,
    /// The job template or a scope uses a capture the resource pattern does not have.
    UndefinedCapture,
    /// The resource pattern or one of its capture constraints is malformed.
    BadResourcePattern,
    /// A scope pattern is malformed.
    BadScope,
    /// The job template is malformed (empty program, bad variable name, …).
    BadJob,
    /// A limit is out of its range.
    BadLimit,
}

/// Why a catalog file was refused. Kind [`ErrorKind::InvalidInput`] (or
/// [`ErrorKind::NotFound`] / [`ErrorKind::Unavailable`] when the file cannot be read).
#[derive(Debug, thiserror::Error)]
pub struct CatalogFileError {
    problem: Problem,
    action: Option<String>,
    field: Option<String>,
    line_column: Option<(usize, usize)>,
    message: String,
    #[source]
    source: Option<BoxError>,
}

impl fmt::Display for CatalogFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("catalog file")?;
        if let Some((line, column)) = self.line_column {
            write!(f, " at line {line} column {column}")?;
        }
        if let Some(action) = &self.action {
            write!(f, ", action {action:?}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ", field {field}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl CatalogFileError {
    pub(crate) fn new(problem: Problem, message: impl Into<String>) -> Self {
        Self {
            problem,
            action: None,
            field: None,
            line_column: None,
            message: message.into(),
            source: None,
        }
    }

    pub(crate) fn action(mut self, action: Option<&str>) -> Self {
        if self.action.is_none() {
            self.action = action.map(str::to_owned);
        }
        self
    }

    pub(crate) fn field(mut self, field: impl Into<String>) -> Self {
        if self.field.is_none() {
            self.field = Some(field.into());
        }
        self
    }

    /// Places the error at byte `offset` of `text`, unless already placed.
    pub(crate) fn at(mut self, text: &str, offset: usize) -> Self {
        if self.line_column.is_none() {
            self.line_column = Some(line_column(text, offset));
        }
        self
    }

    pub(crate) fn source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// What is wrong.
    pub fn problem(&self) -> Problem {
        self.problem
    }

    /// The action it is in, when known (its `name`, or `#n` counting from 1 if it has none).
    pub fn action_name(&self) -> Option<&str> {
        self.action.as_deref()
    }

    /// The field, as a dotted path inside the action (e.g. `job.env.REPLICAS`), when known.
    pub fn field_name(&self) -> Option<&str> {
        self.field.as_deref()
    }

    /// The 1-based line and column (in characters) in the file, when known.
    pub fn line_column(&self) -> Option<(usize, usize)> {
        self.line_column
    }

    /// The backend-neutral kind.
    pub fn kind(&self) -> ErrorKind {
        match self.problem {
            Problem::Io => ErrorKind::Unavailable,
            _ => ErrorKind::InvalidInput,
        }
    }
}

/// 1-based line and column (in characters) of byte `offset` of `text` (clamped to its end).
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_in_characters() {
        assert_eq!(line_column("ab\ncé d", 0), (1, 1));
        assert_eq!(line_column("ab\ncé d", 3), (2, 1));
        assert_eq!(line_column("ab\ncé d", 7), (2, 4));
        assert_eq!(line_column("ab", 99), (1, 3));
        // inside a multi-byte character: the character's own position
        assert_eq!(line_column("é", 1), (1, 1));
    }

    #[test]
    fn display_names_place_action_and_field() {
        let e = CatalogFileError::new(Problem::BadLimit, "must be at least 1")
            .action(Some("a.b"))
            .field("limits.pids")
            .at("x\ny", 2);
        assert_eq!(
            e.to_string(),
            "catalog file at line 2 column 1, action \"a.b\", field limits.pids: must be at least 1"
        );
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
    }
}
