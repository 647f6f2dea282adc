//! `docs/catalog.schema.json` describes the catalog file: the reference file is valid against
//! it, and files the loader refuses for their shape are refused by it too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use gateway_core::catalog_file::CatalogFile;

const SCHEMA: &str = include_str!("../../../docs/catalog.schema.json");
const REFERENCE: &str = include_str!("../../../catalog/reference.toml");
const INFRASTRUCTURE: &str = include_str!("../../../catalog/infrastructure.toml");

fn validator() -> jsonschema::Validator {
    let schema: serde_json::Value = serde_json::from_str(SCHEMA).unwrap();
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .with_pattern_options(jsonschema::PatternOptions::fancy_regex())
        .build(&schema)
        .unwrap()
}

fn as_json(toml_text: &str) -> serde_json::Value {
    toml::from_str(toml_text).unwrap()
}

#[test]
fn the_reference_file_is_valid_against_the_file_schema_and_loads() {
    let v = validator();
    let doc = as_json(REFERENCE);
    let errors: Vec<String> = v.iter_errors(&doc).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(CatalogFile::parse(REFERENCE).unwrap().actions().len(), 4);
}

#[test]
fn the_infrastructure_file_is_valid_against_the_file_schema_and_loads() {
    let doc = as_json(INFRASTRUCTURE);
    let errors: Vec<String> = validator()
        .iter_errors(&doc)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        CatalogFile::parse(INFRASTRUCTURE).unwrap().actions().len(),
        3
    );
}

#[test]
fn bad_files_are_refused_by_the_file_schema_and_by_the_loader() {
    let v = validator();
    let good = REFERENCE;
    for (from, to) in [
        ("name = \"k8s.scale\"", "nmae = \"k8s.scale\""), // missing + unknown
        ("scopes = [\"diag:echo\"]", "scopes = \"diag:echo\""), // wrong type
        ("program = \"/bin/sh\"", "program = \"\""),      // empty program
        (
            "captures = { database = \"identifier\" }",
            "captures = { database = \"ident\" }",
        ),
        (
            "[action.job]\nprogram",
            "limits = { pids = 0 }\n[action.job]\nprogram",
        ), // bad limit
        (
            "SQL = { param = \"sql\" }",
            "GATEWAY_X = { param = \"sql\" }",
        ), // reserved name
    ] {
        assert!(good.contains(from), "{from}");
        let bad = good.replacen(from, to, 1);
        assert!(!v.is_valid(&as_json(&bad)), "the file schema accepted {to}");
        assert!(
            CatalogFile::parse(&bad).is_err(),
            "the loader accepted {to}"
        );
    }
}
