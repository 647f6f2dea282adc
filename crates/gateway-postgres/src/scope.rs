//! PostgreSQL scope strings: which privilege on which table a grant carries.
//!
//! Grammar:
//!
//! ```text
//! pg:<database>:<schema>.<table>:<privilege>      e.g. pg:payments:ledger.entries:select
//! ```
//!
//! - `<database>`, `<schema>`, `<table>`: each a plain identifier, `[A-Za-z_][A-Za-z0-9_]*`, at
//!   most 63 bytes (PostgreSQL's `NAMEDATALEN - 1`). It is used exactly as written, always
//!   double-quoted in SQL, so case is kept: `Ledger` names the table `"Ledger"`, not `ledger`.
//!   Quotes, dots, spaces, wildcards and anything else are refused, so a scope can only ever
//!   name one existing table.
//! - `<privilege>`: one of `select`, `insert`, `update`, `delete`. `truncate`, `references`,
//!   `trigger`, `all` and anything else are refused.
//!
//! A scope grants exactly that privilege on that table. `CONNECT` on the database and `USAGE` on
//! the schema follow implicitly (a table cannot be used without them) and nothing else does: no
//! sequences, functions, column lists or `CREATE`. Scopes of one grant may name several tables
//! and several databases. A grant whose scopes are all `select` is read-only: the role's
//! sessions also default to `default_transaction_read_only = on`.

pub use gateway_core::grant::ScopeError;
use std::fmt;

/// The longest identifier PostgreSQL keeps (`NAMEDATALEN - 1` bytes).
pub const MAX_IDENTIFIER_LEN: usize = 63;

/// A table privilege a scope may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Privilege {
    /// `SELECT`: read rows.
    Select,
    /// `INSERT`: add rows.
    Insert,
    /// `UPDATE`: change rows.
    Update,
    /// `DELETE`: remove rows.
    Delete,
}

impl Privilege {
    /// The SQL keyword (`SELECT`, …).
    pub fn sql(self) -> &'static str {
        match self {
            Self::Select => "SELECT",
            Self::Insert => "INSERT",
            Self::Update => "UPDATE",
            Self::Delete => "DELETE",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "select" => Self::Select,
            "insert" => Self::Insert,
            "update" => Self::Update,
            "delete" => Self::Delete,
            _ => return None,
        })
    }
}

/// One parsed scope: a privilege on one table.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PgScope {
    /// The database the table is in.
    pub database: String,
    /// The table's schema.
    pub schema: String,
    /// The table.
    pub table: String,
    /// The privilege granted on it.
    pub privilege: Privilege,
}

/// Whether `s` is an identifier the grammar accepts.
pub fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    !s.is_empty()
        && s.len() <= MAX_IDENTIFIER_LEN
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl PgScope {
    /// Parses one scope string (see the [module docs](self)).
    pub fn parse(scope: &str) -> Result<Self, ScopeError> {
        let err = |reason: &str| ScopeError::new(scope, reason);
        let rest = scope.strip_prefix("pg:").ok_or_else(|| {
            err("not a PostgreSQL scope (expected pg:<database>:<schema>.<table>:<privilege>)")
        })?;
        let parts: Vec<&str> = rest.split(':').collect();
        let [database, object, privilege] = parts.as_slice() else {
            return Err(err("expected pg:<database>:<schema>.<table>:<privilege>"));
        };
        let Some((schema, table)) = object.split_once('.') else {
            return Err(err("the object must be written <schema>.<table>"));
        };
        for (what, ident) in [
            ("database", database),
            ("schema", &schema),
            ("table", &table),
        ] {
            if !is_identifier(ident) {
                return Err(err(&format!(
                    "the {what} name must be a plain identifier ([A-Za-z_][A-Za-z0-9_]*, at most {MAX_IDENTIFIER_LEN} bytes)"
                )));
            }
        }
        let privilege = Privilege::parse(privilege)
            .ok_or_else(|| err("the privilege must be one of select, insert, update, delete"))?;
        Ok(Self {
            database: (*database).to_owned(),
            schema: schema.to_owned(),
            table: table.to_owned(),
            privilege,
        })
    }

    /// Parses every scope of a grant: at least one, all valid.
    pub fn parse_all(scopes: &[String]) -> Result<Vec<Self>, ScopeError> {
        if scopes.is_empty() {
            return Err(ScopeError::new("", "a grant needs at least one scope"));
        }
        scopes.iter().map(|s| Self::parse(s)).collect()
    }
}

impl fmt::Display for PgScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = match self.privilege {
            Privilege::Select => "select",
            Privilege::Insert => "insert",
            Privilege::Update => "update",
            Privilege::Delete => "delete",
        };
        write!(f, "pg:{}:{}.{}:{p}", self.database, self.schema, self.table)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_round_trips() {
        for s in [
            "pg:payments:ledger.entries:select",
            "pg:db:public.T_1:insert",
            "pg:_x:_y._z:update",
            "pg:a:b.c:delete",
        ] {
            assert_eq!(PgScope::parse(s).unwrap().to_string(), s);
        }
        let s = PgScope::parse("pg:payments:ledger.Entries:select").unwrap();
        assert_eq!(s.database, "payments");
        assert_eq!(s.schema, "ledger");
        assert_eq!(s.table, "Entries");
        assert_eq!(s.privilege, Privilege::Select);
    }

    #[test]
    fn refuses_everything_else() {
        let long = "a".repeat(64);
        for s in [
            "",
            "pg:",
            "k8s:prod:pods:get",
            "pg:db:table:select",
            "pg:db:s.t",
            "pg:db:s.t:select:extra",
            "pg:db:s.t:all",
            "pg:db:s.t:truncate",
            "pg:db:s.t:SELECT",
            "pg:db:s.t.u:select",
            "pg:db:s.*:select",
            "pg:*:s.t:select",
            "pg:db:.t:select",
            "pg:db:s.:select",
            "pg:db:1s.t:select",
            "pg:d b:s.t:select",
            "pg:db:s.t :select",
            "pg:db:public.x\"; DROP TABLE y; --:select",
            "pg:db:public.x\":select",
            "pg:db:public.x';--:select",
            "pg:db:public.tab\u{e9}:select",
            &format!("pg:db:public.{long}:select"),
        ] {
            assert!(PgScope::parse(s).is_err(), "{s:?} must be refused");
        }
        assert!(PgScope::parse_all(&[]).is_err());
        assert!(PgScope::parse(&format!("pg:db:public.{}:select", "a".repeat(63))).is_ok());
    }
}
