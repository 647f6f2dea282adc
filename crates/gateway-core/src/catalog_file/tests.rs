//! The loader's documented refusals, one per case, and that no text makes it panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::action::ActionRequest;
use crate::identity::{AgentIdentity, AuthMethod};
use crate::ids::AgentId;
use serde_json::json;

const GOOD: &str = r#"
[[action]]
name = "db.query"
description = "query"
resource = "db:{database}"
captures = { database = "identifier" }
scopes = ["pg:{database}:*"]
broker = "postgres"
params = '''{"properties": {"sql": {"type": "string"}}, "required": ["sql"], "type": "object"}'''
limits = { timeout_seconds = 30, memory_bytes = 67108864, cpu_millis = 500, pids = 8, max_output_bytes = 1024, max_params_bytes = 4096 }

[action.job]
program = "/bin/sh"
args = ["-c", 'echo "$SQL"']
image = "img@sha256:1"
env = { SQL = { param = "sql" }, DB = { resource = "database" }, MODE = "read-only" }
"#;

fn who() -> AgentIdentity {
    AgentIdentity::new(
        AgentId::new("agent:t").unwrap(),
        "team",
        AuthMethod::StaticKey { key_id: "k".into() },
    )
}

#[test]
fn a_good_file_becomes_actions_with_their_job_broker_scopes_and_limits() {
    let file = CatalogFile::parse(GOOD).unwrap();
    let def = &file.actions()[0];
    assert_eq!(def.name, "db.query");
    assert_eq!(def.broker.as_deref(), Some("postgres"));
    assert_eq!(def.max_params_bytes, 4096);
    let req =
        ActionRequest::new("db.query", "db:orders").with_params(json!({"sql": "select $(x)"}));
    let spec = (def.job)(&req, &who()).unwrap();
    assert_eq!(spec.command, ["/bin/sh", "-c", "echo \"$SQL\""]);
    assert_eq!(spec.env["SQL"], "select $(x)");
    assert_eq!(spec.env["DB"], "orders");
    assert_eq!(spec.env["MODE"], "read-only");
    assert_eq!(spec.image.as_deref(), Some("img@sha256:1"));
    assert_eq!(spec.limits.timeout, Duration::from_secs(30));
    assert_eq!(spec.limits.memory_bytes, 67_108_864);
    assert_eq!((spec.limits.cpu_millis, spec.limits.pids), (500, 8));
    assert_eq!(spec.limits.max_output_bytes, 1024);
    let allowed = def.allowed_scopes.as_ref().unwrap();
    assert!(allowed(&req, "pg:orders:select"));
    assert!(!allowed(&req, "pg:billing:select"));
    let bad = ActionRequest::new("db.query", "db:a b");
    assert!((def.job)(&bad, &who()).is_err());
    assert!(!allowed(&bad, "pg:a b:select"));
    // The image given at load time is only a default.
    let file = CatalogFile::parse_with_image(GOOD, Some("other")).unwrap();
    let spec = (file.actions()[0].job)(&req, &who()).unwrap();
    assert_eq!(spec.image.as_deref(), Some("img@sha256:1"));
}

/// `GOOD` with `from` replaced by `to` (which must occur).
fn with(from: &str, to: &str) -> String {
    assert!(GOOD.contains(from), "{from}");
    GOOD.replacen(from, to, 1)
}

fn refused(text: &str) -> CatalogFileError {
    match CatalogFile::parse(text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => {
            assert_eq!(e.kind(), crate::ErrorKind::InvalidInput, "{e}");
            e
        }
    }
}

#[test]
fn not_toml() {
    let e = refused("[[action]\nname = ");
    assert_eq!(e.problem(), Problem::NotToml, "{e}");
    assert_eq!(e.line_column().map(|p| p.0), Some(1), "{e}");
    for bad in [
        "a = \"unterminated",
        "[[action]]\nname = 1 2",
        "x = value",
        "[[action]]\nname = \"a\"\nname = \"b\"",
        "\u{0}",
    ] {
        let e = refused(bad);
        assert_eq!(e.problem(), Problem::NotToml, "{bad:?}: {e}");
        assert!(e.line_column().is_some(), "{bad:?}: {e}");
    }
    let e = refused("action = 3");
    assert_eq!(e.problem(), Problem::WrongType, "{e}");
}

#[test]
fn unknown_field() {
    let e = refused(&with("broker = \"postgres\"", "brokre = \"postgres\""));
    assert_eq!(e.problem(), Problem::UnknownField, "{e}");
    assert_eq!(e.action_name(), Some("db.query"), "{e}");
    assert_eq!(e.field_name(), Some("brokre"), "{e}");
    assert_eq!(e.line_column().map(|p| p.0), Some(8), "{e}");
    let e = refused(&with("pids = 8", "pids = 8, threads = 2"));
    assert_eq!(e.problem(), Problem::UnknownField, "{e}");
    assert_eq!(e.field_name(), Some("threads"), "{e}");
}

#[test]
fn missing_field() {
    let e = refused(&with("description = \"query\"\n", ""));
    assert_eq!(e.problem(), Problem::MissingField, "{e}");
    assert_eq!(e.field_name(), Some("description"), "{e}");
    assert_eq!(e.action_name(), Some("db.query"), "{e}");
}

#[test]
fn wrong_type() {
    let e = refused(&with("pids = 8", "pids = \"8\""));
    assert_eq!(e.problem(), Problem::WrongType, "{e}");
    assert_eq!(e.field_name(), Some("pids"), "{e}");
    assert_eq!(e.line_column().map(|p| p.0), Some(10), "{e}");
    let e = refused(&with("pids = 8", "pids = -1"));
    assert_eq!(e.problem(), Problem::WrongType, "{e}");
    let e = refused(&with(r#"SQL = { param = "sql" }"#, "SQL = 3"));
    assert_eq!(e.problem(), Problem::WrongType, "{e}");
    assert!(e.to_string().contains("an env value is"), "{e}");
    let e = refused(&with(r#"database = "identifier""#, "database = 1"));
    assert_eq!(e.problem(), Problem::WrongType, "{e}");
    assert!(e.to_string().contains("a capture constraint is"), "{e}");
}

#[test]
fn schema_that_does_not_compile() {
    let e = refused(&with(r#""type": "object"}'''"#, r#""type": "objekt"}'''"#));
    assert_eq!(e.problem(), Problem::BadSchema, "{e}");
    assert_eq!(e.field_name(), Some("params"), "{e}");
    let e = refused(&with(r#""type": "object"}'''"#, r#""type": "object"'''"#));
    assert_eq!(e.problem(), Problem::BadSchema, "{e}");
    assert!(e.to_string().contains("not JSON"), "{e}");
    // A pattern needing backtracking: the ONE validator refuses it here too.
    let e = refused(&with(
        r#"{"type": "string"}"#,
        r#"{"pattern": "(?=a)", "type": "string"}"#,
    ));
    assert_eq!(e.problem(), Problem::BadSchema, "{e}");
}

#[test]
fn a_schema_not_served_as_written_is_refused_where_it_differs() {
    // "type" before "required": serde_json would serve the keys sorted.
    let text = with(
        r#""required": ["sql"], "type": "object"}"#,
        r#""type": "object", "required": ["sql"]}"#,
    );
    let e = refused(&text);
    assert_eq!(e.problem(), Problem::SchemaNotAsServed, "{e}");
    let (line, column) = e.line_column().unwrap();
    let at = text
        .lines()
        .nth(line - 1)
        .unwrap()
        .chars()
        .skip(column - 1)
        .collect::<String>();
    assert!(
        at.starts_with("type\": \"object\", \"required"),
        "{e} at {at:?}"
    );
}

#[test]
fn template_referencing_an_undefined_param_or_capture() {
    let e = refused(&with(
        r#"SQL = { param = "sql" }"#,
        r#"SQL = { param = "query" }"#,
    ));
    assert_eq!(e.problem(), Problem::UndefinedParam, "{e}");
    assert_eq!(e.field_name(), Some("job.env.SQL"), "{e}");
    let e = refused(&with(
        r#"DB = { resource = "database" }"#,
        r#"DB = { resource = "db" }"#,
    ));
    assert_eq!(e.problem(), Problem::UndefinedCapture, "{e}");
    let e = refused(&with("pg:{database}:*", "pg:{db}:*"));
    assert_eq!(e.problem(), Problem::UndefinedCapture, "{e}");
    assert_eq!(e.field_name(), Some("scopes[0]"), "{e}");
    let e = refused(&with("MODE = \"read-only\"", "GATEWAY_GRANT_TOKEN = \"x\""));
    assert_eq!(e.problem(), Problem::BadJob, "{e}");
}

#[test]
fn duplicate_action_name() {
    let text = format!(
        "{GOOD}\n{}",
        GOOD.replace("description = \"query\"", "description = \"again\"")
    );
    let e = refused(&text);
    assert_eq!(e.problem(), Problem::BadName, "{e}");
    assert_eq!(e.action_name(), Some("db.query"), "{e}");
    let second = text.rfind("name = \"db.query\"").unwrap();
    assert_eq!(
        e.line_column().unwrap(),
        (text[..second].matches('\n').count() + 1, 8),
        "{e}"
    );
}

#[test]
fn bad_resource_pattern() {
    for (from, to) in [
        (
            "resource = \"db:{database}\"",
            "resource = \"db:{database\"",
        ),
        ("database = \"identifier\"", "database = \"nope\""),
        ("database = \"identifier\"", "database = { regex = \"(\" }"),
        ("database = \"identifier\"", "other = \"identifier\""),
    ] {
        let e = refused(&with(from, to));
        assert_eq!(e.problem(), Problem::BadResourcePattern, "{to}: {e}");
        assert_eq!(e.action_name(), Some("db.query"), "{e}");
    }
}

#[test]
fn bad_limit() {
    for (from, to, field) in [
        (
            "timeout_seconds = 30",
            "timeout_seconds = 0",
            "limits.timeout_seconds",
        ),
        (
            "timeout_seconds = 30",
            "timeout_seconds = 999999",
            "limits.timeout_seconds",
        ),
        ("pids = 8", "pids = 0", "limits.pids"),
        (
            "memory_bytes = 67108864",
            "memory_bytes = 10",
            "limits.memory_bytes",
        ),
        (
            "max_params_bytes = 4096",
            "max_params_bytes = 99999999",
            "limits.max_params_bytes",
        ),
    ] {
        let e = refused(&with(from, to));
        assert_eq!(e.problem(), Problem::BadLimit, "{to}: {e}");
        assert_eq!(e.field_name(), Some(field), "{e}");
    }
}

#[test]
fn an_empty_file_is_an_empty_catalog() {
    assert!(CatalogFile::parse("").unwrap().actions().is_empty());
    assert_eq!(ActionCatalog::from_toml("").unwrap().actions().count(), 0);
    assert!(
        ActionCatalog::from_toml(GOOD)
            .unwrap()
            .get("db.query")
            .is_some()
    );
}

proptest::proptest! {
    /// Arbitrary text, and the good file cut or mutated anywhere, never make the loader panic.
    #[test]
    fn the_loader_never_panics(text in "\\PC{0,400}", cut in 0usize..2000, insert in "[\\[\\]{}'\"=\\n a-z0-9]{0,6}") {
        let _ = CatalogFile::parse(&text);
        let mut mutated = GOOD.to_owned();
        let mut at = cut.min(mutated.len());
        while !mutated.is_char_boundary(at) { at -= 1; }
        mutated.insert_str(at, &insert);
        let _ = CatalogFile::parse(&mutated);
        let _ = CatalogFile::parse(&GOOD[..at]);
    }
}

#[test]
fn the_fuzz_seeds_load() {
    for seed in [
        include_str!("../../../../fuzz/seeds/catalog_file/small.toml"),
        include_str!("../../../../fuzz/seeds/catalog_file/reference.toml"),
    ] {
        let file = CatalogFile::parse(seed).unwrap();
        assert!(!file.actions().is_empty());
    }
}
