//! The builtins whose regorus behaviour differs from OPA's, on the embedded engine (with
//! gateway-opa's OPA-compatible replacements) and on the real OPA engine, for any policy:
//! `upper`/`lower` of every Unicode scalar value, `time.parse_rfc3339_ns` on a generated set of
//! timestamps, and the regex builtins on a grid of patterns and subjects.
//!
//! Each probe is one evaluation per case on both engines. OPA's bindings fail a builtin with
//! an error (strict builtin errors) where the embedded engine makes it undefined (OPA's
//! default), so "error" and "undefined" both count as "the builtin failed". A case the
//! embedded engine refuses (an evaluation error naming the divergence) counts as refused,
//! which only ever denies; any other difference fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use gateway_opa::{EmbeddedRego, InputLimits};
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::time::Duration;

#[derive(Debug, PartialEq)]
enum Answer {
    Value(Value),
    Failed,
    Refused(String),
}

/// Evaluates `data.probe.x` with `input = {"v": case}` for every case on both engines.
fn probe(test: &str, rule_body: &str, cases: &[Value]) -> Option<Vec<(Value, Answer, Answer)>> {
    let opa = common::real_opa(test)?;
    let policy = format!("package probe\n\nx := {rule_body}\n");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("probe.rego"), &policy).unwrap();
    let embedded = EmbeddedRego::builder()
        .policy("probe.rego", policy)
        .decision_path("data.probe.x")
        // Chunks of thousands of characters, in a debug build, on a busy machine.
        .eval_timeout(Duration::from_secs(60))
        .input_limits(InputLimits {
            max_bytes: 64 << 20,
            ..InputLimits::default()
        })
        .build()
        .unwrap();
    let mut batch = String::new();
    for case in cases {
        writeln!(batch, "0\t{}", json!({ "v": case })).unwrap();
    }
    let out = opa.run(
        &[
            "eval",
            "--policies",
            dir.path().to_str().unwrap(),
            "--path",
            "probe.x",
        ],
        batch.into_bytes(),
        Duration::from_secs(180),
    );
    let on_opa = out.lines().map(|line| {
        let v: Value = serde_json::from_str(line).unwrap();
        match v.get("result") {
            Some(result) => Answer::Value(result.clone()),
            None => Answer::Failed,
        }
    });
    let answers: Vec<_> = cases
        .iter()
        .zip(on_opa)
        .map(|(case, opa)| {
            let local = match embedded.evaluate_document(&json!({ "v": case })) {
                Ok(Some(v)) => Answer::Value(v),
                Ok(None) => Answer::Failed,
                Err(e) => Answer::Refused(e.to_string()),
            };
            (case.clone(), local, opa)
        })
        .collect();
    assert_eq!(answers.len(), cases.len(), "one OPA answer per case");
    Some(answers)
}

/// Fails on any difference other than a refusal; returns how many cases were refused.
fn assert_agree(what: &str, answers: &[(Value, Answer, Answer)]) -> usize {
    let mut refused = 0;
    let mut differences = Vec::new();
    for (case, local, opa) in answers {
        match local {
            Answer::Refused(_) => refused += 1,
            _ if local == opa => {}
            _ => differences.push(format!("{case}: embedded {local:?}, OPA {opa:?}")),
        }
    }
    assert!(
        differences.is_empty(),
        "{what}: {} differences (first 20):\n{}",
        differences.len(),
        differences[..differences.len().min(20)].join("\n")
    );
    refused
}

#[test]
fn upper_and_lower_agree_on_every_code_point() {
    // Every Unicode scalar value, in chunks (one evaluation each).
    let all: Vec<String> = (0..=0x10FFFFu32)
        .filter_map(char::from_u32)
        .map(String::from)
        .collect();
    let cases: Vec<Value> = all.chunks(4096).map(|chunk| json!(chunk)).collect();
    let Some(answers) = probe(
        "upper_and_lower_agree_on_every_code_point",
        "[[upper(s), lower(s)] | some s in input.v]",
        &cases,
    ) else {
        return;
    };
    // Compare character by character, to name the ones that differ.
    let mut differences = Vec::new();
    for (case, local, opa) in &answers {
        let (Answer::Value(Value::Array(local)), Answer::Value(Value::Array(opa))) = (local, opa)
        else {
            panic!("no answer for a chunk: {local:?} / {opa:?}");
        };
        for ((c, l), o) in case.as_array().unwrap().iter().zip(local).zip(opa) {
            if l != o {
                differences.push(format!("{c}: embedded {l}, OPA {o}"));
            }
        }
    }
    assert!(
        differences.is_empty(),
        "{} characters differ (first 40):\n{}",
        differences.len(),
        differences[..differences.len().min(80)].join("\n")
    );
    // Strings of several characters too (Go maps one character at a time; no final sigma).
    let words: Vec<Value> = ["ΑΣ ΟΔΟΣ", "straße", "İstanbul", "ﬁnal ǅ", "ᾀᾳ"]
        .iter()
        .map(|w| json!([w]))
        .collect();
    let answers = probe(
        "upper_and_lower_agree_on_every_code_point",
        "[[upper(s), lower(s)] | some s in input.v]",
        &words,
    )
    .unwrap();
    assert_eq!(assert_agree("upper/lower of words", &answers), 0);
}

#[test]
fn rfc3339_parsing_agrees() {
    let mut cases = Vec::new();
    let dates = [
        "2025-01-06",
        "2024-02-29",
        "2025-02-29",
        "2025-02-30",
        "2025-13-01",
        "2025-00-10",
        "2025-04-31",
        "1677-09-21",
        "2262-04-11",
        "0000-01-01",
        "9999-12-31",
        "2025-1-06",
        "20250-01-06",
        "2025/01/06",
    ];
    let times = [
        "T10:30:00",
        "T9:30:00",
        "T1:02:03",
        "T24:00:00",
        "T23:59:59",
        "T10:30:60",
        "t10:30:00",
        " 10:30:00",
        "T10:3:00",
        "T010:30:00",
        "T10:30",
        "T00:12:43",
        "T23:47:16",
    ];
    let fractions = [
        "",
        ".5",
        ",5",
        ".123456789",
        ".1234567891",
        ".",
        ".Z",
        ".000000001",
    ];
    let zones = [
        "Z",
        "z",
        "+00:00",
        "-00:00",
        "+01:30",
        "-05:00",
        "+24:00",
        "+24:60",
        "+25:00",
        "+10:61",
        "+1:00",
        "+0100",
        "+01:00:00",
        "",
        "Z ",
        "ZZ",
    ];
    for (i, d) in dates.iter().enumerate() {
        for (j, t) in times.iter().enumerate() {
            for (k, f) in fractions.iter().enumerate() {
                // A deterministic spread of zones rather than the full product.
                let z = zones[(i * 7 + j * 3 + k) % zones.len()];
                cases.push(json!(format!("{d}{t}{f}{z}")));
                if (i + j + k) % 3 == 0 {
                    cases.push(json!(format!("{d}{t}{f}Z")));
                }
            }
        }
    }
    for edge in [
        "1677-09-21T00:12:43.145224192Z",
        "1677-09-21T00:12:43.145224191Z",
        "2262-04-11T23:47:16.854775807Z",
        "2262-04-11T23:47:16.854775808Z",
        "2262-04-12T00:47:16.854775807+01:00",
    ] {
        cases.push(json!(edge));
    }
    let Some(answers) = probe(
        "rfc3339_parsing_agrees",
        "time.parse_rfc3339_ns(input.v)",
        &cases,
    ) else {
        return;
    };
    let parsed = answers
        .iter()
        .filter(|(_, l, _)| matches!(l, Answer::Value(_)))
        .count();
    assert_eq!(assert_agree("time.parse_rfc3339_ns", &answers), 0);
    assert!(
        parsed > 50 && parsed < cases.len() - 50,
        "{parsed} of {} parsed",
        cases.len()
    );
}

#[test]
fn regex_builtins_agree() {
    let patterns = [
        r"\bDELETE\b",
        r"^(SELECT|WITH)\b",
        r";\s*\S",
        r"\w+",
        r"[\w-]+",
        r"\d+",
        r"[^\d\s]+",
        r"\B..\B",
        r"(?i)k",
        r"(?i)\w",
        r"(?i)straße",
        r"\S+",
        r"\W",
        r"[[:alpha:]]+",
        r"[[:space:]]",
        r"\pL+",
        r"\p{Greek}",
        r"^\s*$",
        r"a{,2}",
        r"x{2}",
        r"a*?",
        r"\<a\>",
        r"[a&&b]",
        r"[[a]",
        r"\Qa.b\E",
        r"\012",
        r"(?s).",
        r".",
        r"(?m)^b$",
        r"a|é",
        r"[é-ú]",
        r"\x{e9}",
        r"\x41",
        r"(?U)a+",
        r"(?P<n>a)",
        r"(?<n>a)",
        r"(?x) a",
        r"a**",
        r"\C",
        r"[a--b]",
        r"\e",
        r"(?=a)",
        r"\1",
        r"a{1001}",
        r"[",
        r"é\b",
        r"\bé",
        r"$",
        r"^",
    ];
    let subjects = [
        "SELECT DELETEé",
        "DELETE",
        "xDELETE",
        "SELECTé 1",
        "a; b",
        "a;\u{a0}b",
        "a;\u{2028}b",
        "éa_1-2",
        "١٢٣",
        "K",
        "ſ",
        "STRASSE",
        "a\u{a0}b",
        "a\nb",
        "abc",
        "aa",
        "<a>",
        "a&b",
        "[a",
        "a.b",
        "\n",
        "é",
        "Ωμέγα",
        "",
        "a{,2}",
        "x{2}",
        "axb",
        "a-b",
    ];
    let mut cases = Vec::new();
    for p in patterns {
        for s in subjects {
            cases.push(json!({"p": p, "s": s}));
        }
    }
    let body = r#"{
        "match": regex.match(input.v.p, input.v.s),
        "find": regex.find_n(input.v.p, input.v.s, -1),
        "split": regex.split(input.v.p, input.v.s),
        "replace": regex.replace(input.v.s, input.v.p, "<$0>"),
        "submatch": regex.find_all_string_submatch_n(input.v.p, input.v.s, -1),
        "valid": regex.is_valid(input.v.p),
    }"#;
    let Some(answers) = probe("regex_builtins_agree", body, &cases) else {
        return;
    };
    let matched = answers
        .iter()
        .filter(|(_, l, _)| matches!(l, Answer::Value(v) if v["match"] == true))
        .count();
    let refused = assert_agree("regex builtins", &answers);
    // Only the patterns Go accepts but the translation cannot reproduce are refused.
    assert!(refused <= 3 * subjects.len(), "{refused} cases refused");
    assert!(matched > 100, "only {matched} matches");
    // And a pattern OPA refuses is invalid on both.
    let valid = probe(
        "regex_builtins_agree",
        "regex.is_valid(input.v)",
        &[json!("a**"), json!("(?x)a"), json!(r"\bok\b")],
    )
    .unwrap();
    assert_eq!(assert_agree("regex.is_valid", &valid), 0);
}
