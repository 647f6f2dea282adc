//! Differential test: the embedded engine (regorus) against the real OPA engine (OPA v1.20.2,
//! through `tools/opa/opa_harness.py eval`) on a generated corpus of policy inputs.
//!
//! The corpus is generated deterministically (seeded) as JSON text, numbers written the way a
//! client might write them. The embedded side parses each input as the gateway does
//! ([`gateway_core::strict_json::parse_exact`], which refuses numbers a float would change)
//! and evaluates the decision rule; OPA reads the same text, unparsed. All inputs go to OPA in
//! one harness process.
//!
//! Fails on: an input the embedded engine allows and OPA does not (OPA errors and undefined
//! count as denies, as the gateway makes them), any difference in scopes, TTL, approval or
//! runner obligations between two allows, and any other difference not in [`ALLOWLIST`].
//!
//! Run locally: `scripts/test -- -p gateway-opa --test differential`, or with the service
//! exported by hand (see the crate docs). `GATEWAY_DIFF_CASES` changes the corpus size
//! (default 12,000), `GATEWAY_DIFF_SEED` the seed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::policies_dir;
use gateway_opa::EmbeddedRego;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

/// Deny-only differences that are expected, each with its reason. A difference is matched by
/// its class (see [`classify`]); a class not listed here fails the test.
const ALLOWLIST: &[(&str, &str)] = &[
    (
        "refused_number",
        "the gateway refuses, before any engine, a number that a 64-bit float would change \
         (strict_json::parse_exact); OPA reads the exact text and may allow (the embedded side \
         is the stricter one)",
    ),
    (
        "opa_strict_builtin_error",
        "the OPA bindings run with strict builtin errors, so a failing builtin (e.g. \
         time.parse_rfc3339_ns on 2025-02-30) is an evaluation error where the embedded engine \
         and a default OPA server make the expression undefined; both deny",
    ),
    (
        "number_formatting",
        "sprintf(\"%v\") formats some numbers differently (OPA keeps the JSON text, e.g. 1e1 or \
         1.0; regorus prints its f64, e.g. 10); both deny, only a reason's text differs",
    ),
];

const DEFAULT_CASES: usize = 12_000;
const DEFAULT_SEED: u64 = 0x5eed_0a9a_2026;

/// splitmix64: small, seeded, reproducible across platforms.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T: ?Sized>(&mut self, items: &[&'a T]) -> &'a T {
        items[self.below(items.len())]
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// Characters that Unicode-aware and ASCII-only engines treat differently (word characters,
/// case mappings that expand, titlecase, dotted/dotless i, Kelvin sign, spaces, controls).
const UNICODE: &[&str] = &[
    "é",
    "ß",
    "ﬁ",
    "ﬅ",
    "ŉ",
    "ǰ",
    "İ",
    "ı",
    "K",
    "ſ",
    "ǅ",
    "ᾀ",
    "Ω",
    "ẞ",
    "µ",
    "ΐ",
    "\u{a0}",
    "\u{2028}",
    "\u{200b}",
    "\u{feff}",
    "\u{0}",
    "\u{7f}",
    "\u{1f600}",
    "日本",
    "Ａ",
    "١",
    "\u{301}",
    "\t",
    "\n",
    "\\",
    "\"",
    "/",
    "ǈ",
    "ﬀ",
    "և",
    "ﬓ",
];

/// Mutates `s` with a probability: inserts, appends or prepends a tricky character.
fn unicode_noise(rng: &mut Rng, s: &str, percent: u64) -> String {
    if !rng.chance(percent) {
        return s.to_owned();
    }
    let c = rng.pick(UNICODE);
    let chars: Vec<char> = s.chars().collect();
    let at = rng.below(chars.len() + 1);
    let mut out: String = chars[..at].iter().collect();
    out.push_str(c);
    out.extend(&chars[at..]);
    out
}

/// A random item of `items`, mutated by [`unicode_noise`].
fn noisy_pick(rng: &mut Rng, items: &[&str], percent: u64) -> String {
    let item = rng.pick(items);
    unicode_noise(rng, item, percent)
}

fn js(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// Numbers as a client could write them, at the edges the policy cares about.
const NUMBERS: &[&str] = &[
    "0",
    "1",
    "2",
    "3",
    "9",
    "10",
    "11",
    "-1",
    "-0",
    "0.5",
    "1.5",
    "2.0",
    "10.0",
    "1e1",
    "1E1",
    "1e0",
    "3e0",
    "9.999999999999999",
    "10.000000000000002",
    "10.0000000000000001",
    "4.0000000000000001",
    "3.0000000000000000001",
    "1e308",
    "-1e308",
    "1.7976931348623157e308",
    "5e-324",
    "9007199254740993",
    "9007199254740992",
    "18446744073709551616",
    "1e400",
    "100",
    "0.1",
    "2.5",
    "1e-7",
    "24",
    "-0.0",
];

const NON_NUMBERS: &[&str] = &["\"3\"", "null", "true", "[]", "{}", "\"\"", "[3]"];

fn number_or_junk(rng: &mut Rng) -> String {
    if rng.chance(85) {
        rng.pick(NUMBERS).to_owned()
    } else {
        rng.pick(NON_NUMBERS).to_owned()
    }
}

fn namespace(rng: &mut Rng) -> String {
    let base = rng.pick(&[
        "team-a",
        "team-b",
        "prod",
        "production",
        "a",
        "team-a-",
        "-team",
        "Team-A",
        "t1",
        "team.a",
        "",
        "x-y-z",
        "prod ",
        "pröd",
    ]);
    unicode_noise(rng, base, 10)
}

fn k8s_resource(rng: &mut Rng, ns: &str) -> String {
    let name = noisy_pick(
        rng,
        &[
            "web", "api.v1", "w", "web-", ".web", "w-1.2", "WEB", "we_b", "",
        ],
        8,
    );
    let kind = rng.pick(&[
        "deployments",
        "deployments",
        "deployments",
        "pods",
        "Deployments",
    ]);
    match rng.below(10) {
        0 => format!("k8s:{ns}/{kind}/{name}/extra"),
        1 => format!("k8s:{ns}/{kind}"),
        2 => format!("K8S:{ns}/{kind}/{name}"),
        _ => format!("k8s:{ns}/{kind}/{name}"),
    }
}

fn sql(rng: &mut Rng) -> String {
    let start = rng.pick(&[
        "SELECT",
        "select",
        "WITH t AS (SELECT 1) SELECT",
        "Select",
        "EXPLAIN SELECT",
        " SELECT",
        "SELECT\u{a0}",
        "SELECTé",
        "ſelect",
        "\u{feff}SELECT",
        "(SELECT",
        "",
    ]);
    let middle = rng.pick(&[
        " 1",
        " id FROM orders",
        " * FROM t WHERE day = '2025-01-06'",
        " x FROM t;",
        " 1 FROM t FOR",
        " a, b FROM t ORDER BY a",
        " name FROM users WHERE name = 'ß'",
    ]);
    let keyword = rng.pick(&[
        "",
        "",
        "",
        " DELETE",
        " UPDATE",
        " INTO x",
        " SET",
        "; SELECT 2",
        ";",
        "; ",
        " DO",
        " delete",
        " DELETEé",
        " DELETEﬁ",
        " DELETEß",
        " éDELETE",
        " DELETE_",
        " DELETE1",
        " INTOﬅ",
        " DROPǅ",
        " DELETE\u{a0}",
        "\u{2028}DELETE",
        " ﬁDROP",
        " CALLİ",
        " SETı",
        ";\u{a0}SELECT 1",
        ";\u{2028}SELECT 1",
        ";\u{85}SELECT",
        " SETK",
        " ᾀDELETE",
    ]);
    let s = format!("{start}{middle}{keyword}");
    unicode_noise(rng, &s, 15)
}

fn request_time(rng: &mut Rng) -> String {
    let hour = rng.below(24);
    let minute = rng.below(60);
    let day = 1 + rng.below(28);
    if rng.chance(75) {
        let frac = rng.pick(&["", "", ".5", ".123456789", ".000001"]);
        let zone = rng.pick(&["Z", "Z", "Z", "+00:00", "+01:30", "-05:00", "+23:59"]);
        return format!("2025-01-{day:02}T{hour:02}:{minute:02}:07{frac}{zone}");
    }
    rng.pick(&[
        "2025-01-06T10:30:00z",
        "2025-01-06t10:30:00Z",
        "2025-01-06 10:30:00Z",
        "2025-01-06T10:30:60Z",
        "2025-01-06T9:30:00Z",
        "2025-01-06T10:30:00,5Z",
        "2025-01-06T10:30:00+24:00",
        "2025-02-30T10:30:00Z",
        "2024-02-29T23:59:59Z",
        "2025-13-01T10:30:00Z",
        "2025-01-06T24:00:00Z",
        "0000-01-01T00:00:00Z",
        "9999-12-31T23:59:59Z",
        "2025-01-06T10:30:00.1234567891Z",
        "2025-01-06T10:30:00",
        "2025-01-06T10:30:00+0100",
        "yesterday",
        "",
        "2025-01-06T10:30:00Z\n",
        "２025-01-06T10:30:00Z",
        "2025-01-06T10:30:00.Z",
    ])
    .to_owned()
}

/// One input document as JSON text.
fn input_text(rng: &mut Rng) -> String {
    let action = match rng.below(20) {
        0 => unicode_noise(rng, "k8s.scale", 100),
        1 => rng
            .pick(&["k8s.delete", "K8S.SCALE", "db.Query", "", "diag.echo "])
            .to_owned(),
        2..=8 => "k8s.scale".to_owned(),
        9..=15 => "db.query".to_owned(),
        _ => "diag.echo".to_owned(),
    };
    let ns = namespace(rng);
    let (resource, params) = match rng.below(10) {
        0 => (
            noisy_pick(
                rng,
                &["diag:x", "db:analytics", "k8s:team-a/deployments/web"],
                30,
            ),
            format!("{{\"message\":{}}}", js(&unicode_noise(rng, "hi", 30))),
        ),
        _ if action.starts_with("k8s") || rng.chance(5) => (
            k8s_resource(rng, &ns),
            format!("{{\"replicas\":{}}}", number_or_junk(rng)),
        ),
        _ if action.starts_with("db") || rng.chance(5) => {
            let db = noisy_pick(
                rng,
                &[
                    "db:analytics",
                    "db:production",
                    "db:prod",
                    "db:a-b_c",
                    "db:",
                    "db:a.b",
                    "DB:x",
                ],
                10,
            );
            let sql_value = if rng.chance(92) {
                js(&sql(rng))
            } else {
                number_or_junk(rng)
            };
            (db, format!("{{\"sql\":{sql_value}}}"))
        }
        _ => (
            noisy_pick(rng, &["diag:smoke", "diag:", "diag", "Diag:x"], 15),
            if rng.chance(85) {
                format!("{{\"message\":{}}}", js(&unicode_noise(rng, "hello", 40)))
            } else {
                format!("{{\"message\":{}}}", number_or_junk(rng))
            },
        ),
    };
    let namespaces = match rng.below(10) {
        0 => "\"team-a\"".to_owned(),
        1 => "null".to_owned(),
        2 => format!("[{}]", js(&namespace(rng))),
        _ => format!("[{},{}]", js(&ns), js(rng.pick(&["team-a", "prod", "x"]))),
    };
    let role = js(&noisy_pick(
        rng,
        &[
            "db-reader",
            "db-reader",
            "db-admin",
            "DB-READER",
            "deployer",
        ],
        8,
    ));
    let agent_id = match rng.below(25) {
        0 => "\"\"".to_owned(),
        1 => "5".to_owned(),
        2 => "null".to_owned(),
        _ => js(&unicode_noise(rng, "agent:deployer", 20)),
    };
    let agent = if rng.chance(2) {
        "null".to_owned()
    } else {
        format!(
            "{{\"id\":{agent_id},\"owner\":{},\"attributes\":{{\"namespaces\":{namespaces},\"role\":{role}}},\"auth\":{{\"method\":\"static_key\",\"key_id\":{}}}}}",
            js(&unicode_noise(rng, "team-platform", 30)),
            js(&unicode_noise(rng, "key-1", 20)),
        )
    };
    let version = if rng.chance(90) {
        "1".to_owned()
    } else {
        rng.pick(&[
            "2",
            "0",
            "1.0",
            "\"1\"",
            "1.0000000000000001",
            "null",
            "1e0",
            "true",
        ])
        .to_owned()
    };
    let mut doc = format!(
        "{{\"contract_version\":{version},\"agent\":{agent},\"action\":{},\"resource\":{},\"params\":{params},\"intent\":{},\"requested_ttl_seconds\":{},\"request_time\":{},\"correlation_id\":{},\"context\":{{\"note\":{}}}}}",
        js(&action),
        js(&resource),
        js(&unicode_noise(rng, "scale for the sale", 50)),
        if rng.chance(90) {
            rng.pick(&["60", "120", "900", "0"]).to_owned()
        } else {
            number_or_junk(rng)
        },
        js(&request_time(rng)),
        js(&unicode_noise(
            rng,
            "0193f5d2-0000-7000-8000-000000000000",
            20
        )),
        js(&unicode_noise(rng, "ctx", 50)),
    );
    // Malformed documents: a missing field, or a field of the wrong type.
    if rng.chance(4) {
        doc = doc.replacen("\"request_time\":", "\"request_time_\":", 1);
    }
    doc
}

/// The data configurations: 0 is the policies' own data.json.
fn data_configs() -> Vec<Value> {
    vec![
        json!({}),
        json!({"agent_gateway": {"limits": {"max_replicas": 3}, "business_hours": {"start_hour": 9, "end_hour": 17}}}),
        json!({"agent_gateway": {"business_hours": {"start_hour": 22, "end_hour": 6}}}),
        json!({"agent_gateway": {"limits": {"max_replicas": "10"}, "business_hours": {"start_hour": "9", "end_hour": 17}}}),
        json!({"agent_gateway": {"limits": {"max_replicas": 2.5}, "business_hours": {"start_hour": 0.5, "end_hour": 23.5}}}),
    ]
}

/// What one engine decided, reduced to what the comparison needs.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    /// Refused before the policy (the input's numbers).
    Refused(String),
    /// The decision document.
    Decided(Value),
    Undefined,
    Error(String),
}

impl Outcome {
    fn allows(&self) -> bool {
        matches!(self, Outcome::Decided(d) if d.get("allow") == Some(&Value::Bool(true)))
    }
}

fn obligations(d: &Value) -> Value {
    json!({
        "scopes": d.get("scopes"),
        "max_ttl_seconds": d.get("max_ttl_seconds"),
        "require_approval": d.get("require_approval"),
        "runner": d.get("runner"),
    })
}

/// The allowlist class of a difference, or `None` when it is not allowed.
fn classify(embedded: &Outcome, opa: &Outcome) -> Option<&'static str> {
    if embedded.allows() {
        // Fail-open, or obligations differ: never allowed.
        return None;
    }
    match (embedded, opa) {
        (Outcome::Refused(_), _) => Some("refused_number"),
        (Outcome::Decided(_), Outcome::Error(e)) if e.contains("eval_builtin_error") => {
            Some("opa_strict_builtin_error")
        }
        (Outcome::Decided(a), Outcome::Decided(b))
            if !b.get("allow").is_some_and(|v| v == true) =>
        {
            let reasons = |d: &Value| -> Vec<String> {
                d["reasons"]
                    .as_array()
                    .map(|r| {
                        r.iter()
                            .map(|s| s.as_str().unwrap_or("").to_owned())
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let (ra, rb) = (reasons(a), reasons(b));
            let same_shape = ra.len() == rb.len()
                && ra
                    .iter()
                    .zip(&rb)
                    .all(|(x, y)| x == y || (formats_number(x) && formats_number(y)));
            let rest_same = {
                let mut a = a.clone();
                let mut b = b.clone();
                a["reasons"] = Value::Null;
                b["reasons"] = Value::Null;
                a == b
            };
            (same_shape && rest_same).then_some("number_formatting")
        }
        _ => None,
    }
}

/// Whether a reason is one that formats an input or data value with `%v`.
fn formats_number(reason: &str) -> bool {
    reason.starts_with("unsupported contract_version ")
        || reason.starts_with("replicas ")
        || reason.starts_with("outside business hours")
}

#[test]
fn embedded_engine_is_never_more_permissive_than_opa() {
    let Some(opa) = common::real_opa("embedded_engine_is_never_more_permissive_than_opa") else {
        return;
    };
    let cases: usize = std::env::var("GATEWAY_DIFF_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CASES);
    let seed: u64 = std::env::var("GATEWAY_DIFF_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_SEED);
    let configs = data_configs();
    let dir = tempfile::tempdir().unwrap();
    let policy_text = std::fs::read_to_string(policies_dir().join("authz.rego")).unwrap();
    let mut engines = vec![EmbeddedRego::from_dir(policies_dir()).unwrap()];
    let mut args: Vec<String> = vec![
        "eval".into(),
        "--policies".into(),
        policies_dir().display().to_string(),
        "--path".into(),
        "agent_gateway.authz.decision".into(),
    ];
    for (k, config) in configs.iter().enumerate().skip(1) {
        engines.push(
            EmbeddedRego::builder()
                .policy("authz.rego", policy_text.clone())
                .data(config.clone())
                .build()
                .unwrap(),
        );
        let file = dir.path().join(format!("data-{k}.json"));
        std::fs::write(&file, config.to_string()).unwrap();
        args.push("--data".into());
        args.push(file.display().to_string());
    }

    let mut rng = Rng(seed);
    let corpus: Vec<(usize, String)> = (0..cases)
        .map(|i| (i % configs.len(), input_text(&mut rng)))
        .collect();
    let mut batch = String::new();
    for (k, text) in &corpus {
        writeln!(batch, "{k}\t{text}").unwrap();
    }
    let started = std::time::Instant::now();
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = opa.run(&arg_refs, batch.into_bytes(), Duration::from_secs(300));
    let opa_time = started.elapsed();
    let opa_outcomes: Vec<Outcome> = out
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap();
            if let Some(result) = v.get("result") {
                Outcome::Decided(result.clone())
            } else if v.get("undefined").is_some() {
                Outcome::Undefined
            } else {
                Outcome::Error(v["error"].as_str().unwrap_or("").to_owned())
            }
        })
        .collect();
    assert_eq!(opa_outcomes.len(), corpus.len(), "one OPA answer per input");

    let started = std::time::Instant::now();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut fail_open = 0;
    let mut allowed = 0;
    let mut examples: BTreeMap<&str, String> = BTreeMap::new();
    for ((k, text), opa_outcome) in corpus.iter().zip(&opa_outcomes) {
        let embedded = match gateway_core::strict_json::parse_exact(text.as_bytes()) {
            Err(e) => Outcome::Refused(e.to_string()),
            Ok(value) => match engines[*k].evaluate_document(&value) {
                Ok(Some(d)) => Outcome::Decided(d),
                Ok(None) => Outcome::Undefined,
                Err(e) => Outcome::Error(e.to_string()),
            },
        };
        allowed += usize::from(embedded.allows());
        let same = match (&embedded, opa_outcome) {
            (Outcome::Decided(a), Outcome::Decided(b)) => a == b,
            (a, b) => a == b,
        };
        if same {
            continue;
        }
        let both_allow_same_obligations = embedded.allows()
            && opa_outcome.allows()
            && matches!((&embedded, opa_outcome), (Outcome::Decided(a), Outcome::Decided(b)) if obligations(a) == obligations(b));
        let class = if both_allow_same_obligations {
            // Only reasons differ on an allow (the reference policy gives none).
            Some("allow_reasons")
        } else {
            classify(&embedded, opa_outcome)
        };
        match class.filter(|c| ALLOWLIST.iter().any(|(name, _)| name == c)) {
            Some(c) => {
                *counts.entry(c).or_default() += 1;
                examples.entry(c).or_insert_with(|| text.clone());
            }
            None => {
                fail_open += usize::from(embedded.allows() && !opa_outcome.allows());
                failures.push(format!(
                "data config {k}\n  input:    {text}\n  embedded: {embedded:?}\n  opa:      {opa_outcome:?}"
            ))
            }
        }
    }
    let embedded_time = started.elapsed();
    eprintln!(
        "differential: {cases} inputs ({} data configurations, seed {seed}), {allowed} allowed; \
         OPA batch {opa_time:?}, embedded {embedded_time:?}; allowlisted differences: {counts:?}",
        configs.len()
    );
    for (class, example) in &examples {
        eprintln!("  e.g. {class}: {example}");
    }
    assert!(
        failures.is_empty(),
        "{} inputs where the embedded engine differs from OPA outside the allowlist, {fail_open} \
         of them allowed by the embedded engine and denied by OPA (first 20):\n{}",
        failures.len(),
        failures
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    // The corpus must exercise both outcomes, or it proves nothing.
    assert!(
        allowed > cases / 50,
        "only {allowed} of {cases} inputs allowed"
    );
    assert!(allowed < cases / 2, "{allowed} of {cases} inputs allowed");
}
