//! Secret redaction: the gateway applies a [`Redactor`] to every audit event before any sink sees
//! it, so a redacted value never reaches a sink, a database or a hash, whichever sink is
//! configured (gateway-audit's sinks apply one again before sealing, as defence in depth).

use crate::audit::AuditEvent;
use crate::error::ErrorKind;
use regex::{Captures, Regex};
use serde_json::Value;
use std::borrow::Cow;
use std::sync::LazyLock;

/// What replaces a redacted value.
pub const REDACTED: &str = "[REDACTED]";

/// Key names (lower-cased substrings) whose values are always redacted.
const SECRET_KEY_PARTS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "private_key",
    "authorization",
    "credential",
];

// The patterns are constants; `Regex::new` only fails on a malformed pattern, which the unit
// tests below would catch.
#[allow(clippy::expect_used)]
static PEM_PRIVATE_KEY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----(?s:.*?)(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\z)",
    )
    .expect("valid PEM pattern")
});
#[allow(clippy::expect_used)]
static BEARER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b(bearer|basic|token)(\s+)[A-Za-z0-9\-._~+/]+=*")
        .expect("valid bearer pattern")
});
#[allow(clippy::expect_used)]
static JWT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
        .expect("valid JWT pattern")
});
#[allow(clippy::expect_used)]
static AWS_ACCESS_KEY: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b").expect("valid AWS key pattern"));
#[allow(clippy::expect_used)]
static CARD: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b\d(?:[ -]?\d){12,18}\b").expect("valid card pattern"));

/// A redaction path that is not a JSON Pointer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("redaction path {pointer:?} must start with '/'")]
pub struct RedactPathError {
    /// The path given.
    pub pointer: String,
}

impl RedactPathError {
    /// The backend-neutral kind: always [`ErrorKind::InvalidInput`].
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidInput
    }
}

/// Replaces secrets in audit events: values under configured JSON paths of `details`, values of
/// secret-named keys, and credential-looking strings anywhere in the event's free-text fields.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    paths: Vec<Vec<String>>,
}

impl Redactor {
    /// A redactor with the built-in patterns only.
    pub fn new() -> Self {
        Self::default()
    }

    /// Also redacts the value at `pointer`, a JSON Pointer (RFC 6901) into the event's `details`
    /// where a `*` segment matches any key or array index, e.g. `/params/*/password`.
    pub fn with_path(mut self, pointer: &str) -> Result<Self, RedactPathError> {
        let Some(rest) = pointer.strip_prefix('/') else {
            return Err(RedactPathError {
                pointer: pointer.to_owned(),
            });
        };
        let segments = rest
            .split('/')
            .map(|s| s.replace("~1", "/").replace("~0", "~"))
            .collect();
        self.paths.push(segments);
        Ok(self)
    }

    /// Redacts `event` in place.
    pub fn redact(&self, event: &mut AuditEvent) {
        for path in &self.paths {
            if let Some((first, rest)) = path.split_first() {
                for (key, value) in event.details.iter_mut() {
                    if first == "*" || first == key {
                        redact_path(value, rest);
                    }
                }
            }
        }
        for value in event.details.values_mut() {
            redact_value(value);
        }
        for (key, value) in event.details.iter_mut() {
            if is_secret_key(key) {
                *value = Value::String(REDACTED.to_owned());
            }
        }
        for field in [&mut event.action, &mut event.resource] {
            redact_in_place(field);
        }
        for field in [&mut event.origin, &mut event.grant_id, &mut event.runner_id]
            .into_iter()
            .flatten()
        {
            redact_in_place(field);
        }
        if let Some(decision) = &mut event.decision {
            decision.reasons.iter_mut().for_each(redact_in_place);
        }
    }

    /// Redacts credential-looking substrings of `text`.
    pub fn redact_str(text: &str) -> Cow<'_, str> {
        redact_text(text)
    }
}

fn is_secret_key(key: &str) -> bool {
    SECRET_KEY_PARTS
        .iter()
        .any(|part| contains_ignore_ascii_case(key, part))
}

/// Whether `haystack` contains `needle` (lower-case ASCII), ignoring ASCII case: the same as
/// `haystack.to_ascii_lowercase().contains(needle)`, without the allocation.
fn contains_ignore_ascii_case(haystack: &str, needle: &str) -> bool {
    let (h, n) = (haystack.as_bytes(), needle.as_bytes());
    h.len() >= n.len() && h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n))
}

/// Whether [`BEARER`] can match `text`. Its words are matched case-insensitively by Unicode
/// rules (`ſ` is an `s`, the Kelvin sign a `k`), so text that is not ASCII always goes to the
/// regex; in ASCII text a match needs one of the words in some ASCII case.
fn may_hold_auth_word(text: &str) -> bool {
    !text.is_ascii()
        || ["bearer", "basic", "token"]
            .iter()
            .any(|word| contains_ignore_ascii_case(text, word))
}

/// Integers below 10^12 have at most 12 digits: never a card number (13 to 19 digits).
fn too_short_for_a_card(n: &serde_json::Number) -> bool {
    const SHORTEST_CARD: u64 = 1_000_000_000_000;
    match (n.as_u64(), n.as_i64()) {
        (Some(u), _) => u < SHORTEST_CARD,
        (None, Some(i)) => i.unsigned_abs() < SHORTEST_CARD,
        // Floats keep the full check.
        (None, None) => false,
    }
}

fn redact_path(value: &mut Value, path: &[String]) {
    let Some((first, rest)) = path.split_first() else {
        *value = Value::String(REDACTED.to_owned());
        return;
    };
    match value {
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                if first == "*" || first == key {
                    redact_path(child, rest);
                }
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter_mut().enumerate() {
                if first == "*" || first.parse::<usize>().ok() == Some(i) {
                    redact_path(child, rest);
                }
            }
        }
        _ => {}
    }
}

/// Redacts secret-named keys and credential-looking strings and numbers, recursively.
fn redact_value(value: &mut Value) {
    match value {
        Value::String(s) => redact_in_place(s),
        Value::Number(n) if too_short_for_a_card(n) => {}
        Value::Number(n) => {
            let digits = n.to_string();
            if let Some(masked) = mask_card(&digits) {
                *value = Value::String(masked);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_value),
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                if is_secret_key(key) {
                    *child = Value::String(REDACTED.to_owned());
                } else {
                    redact_value(child);
                }
            }
        }
        Value::Null | Value::Bool(_) => {}
    }
}

fn redact_in_place(s: &mut String) {
    if let Cow::Owned(redacted) = redact_text(s) {
        *s = redacted;
    }
}

fn redact_text(text: &str) -> Cow<'_, str> {
    // Cheap pre-checks keep the common case (no secret) allocation-free.
    let mut out = Cow::Borrowed(text);
    if out.contains("PRIVATE KEY-----") {
        out = Cow::Owned(
            PEM_PRIVATE_KEY
                .replace_all(&out, "[REDACTED PRIVATE KEY]")
                .into_owned(),
        );
    }
    if out.contains("eyJ")
        && let Cow::Owned(s) = JWT.replace_all(&out, "[REDACTED JWT]")
    {
        out = Cow::Owned(s);
    }
    if may_hold_auth_word(&out)
        && let Cow::Owned(s) = BEARER.replace_all(&out, |c: &Captures<'_>| {
            format!("{}{}{REDACTED}", &c[1], &c[2])
        })
    {
        out = Cow::Owned(s);
    }
    if (out.contains("AKIA") || out.contains("ASIA"))
        && let Cow::Owned(s) = AWS_ACCESS_KEY.replace_all(&out, REDACTED)
    {
        out = Cow::Owned(s);
    }
    if out.bytes().filter(u8::is_ascii_digit).count() >= 13
        && let Cow::Owned(s) = CARD.replace_all(&out, |c: &Captures<'_>| {
            mask_card(&c[0]).unwrap_or_else(|| c[0].to_owned())
        })
    {
        out = Cow::Owned(s);
    }
    out
}

/// `Some("[card ****1234]")` when `candidate` (digits, spaces, dashes) is a Luhn-valid 13-19
/// digit card number.
fn mask_card(candidate: &str) -> Option<String> {
    let digits: Vec<u32> = candidate.chars().filter_map(|c| c.to_digit(10)).collect();
    if !(13..=19).contains(&digits.len())
        || candidate
            .chars()
            .any(|c| !(c.is_ascii_digit() || c == ' ' || c == '-'))
    {
        return None;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                let dd = d * 2;
                if dd > 9 { dd - 9 } else { dd }
            } else {
                d
            }
        })
        .sum();
    if !sum.is_multiple_of(10) {
        return None;
    }
    let last4: String = digits[digits.len() - 4..]
        .iter()
        .filter_map(|d| char::from_digit(*d, 10))
        .collect();
    Some(format!("[card ****{last4}]"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditEventKind, DecisionRecord};
    use crate::ids::RequestId;
    use serde_json::json;

    fn event(details: Value) -> AuditEvent {
        let mut ev = AuditEvent::new(RequestId::new(), 1, AuditEventKind::Requested);
        ev.details = details.as_object().cloned().unwrap();
        ev
    }

    const PEM: &str =
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\nabc\n-----END RSA PRIVATE KEY-----";
    const JWT_SAMPLE: &str =
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZ2VudCJ9.dBjftJeZ4CVPmB92K27uhbUJU1p1r_wW1gFWFOEjXk";

    #[test]
    fn built_in_patterns() {
        let r = Redactor::new();
        let mut ev = event(json!({
            "header": "Authorization: Bearer abc.DEF-123_x~y",
            "key": format!("here {PEM} there"),
            "jwt": format!("token={JWT_SAMPLE}"),
            "card": "pay with 4111 1111 1111 1111 now",
            "card_number": 4_111_111_111_111_111u64,
            "not_card": "4111 1111 1111 1112",
            "order": "order 1234567890123",
            "nested": {"list": [{"Password": "hunter2"}, "fine"]},
            "client_secret": {"x": 1},
            "aws": "AKIAABCDEFGHIJKLMNOP",
            "n": 5,
        }));
        ev.resource = format!("db:{JWT_SAMPLE}");
        ev.decision = Some(DecisionRecord {
            allow: false,
            reasons: vec!["bad card 5500-0000-0000-0004".into()],
            policy_id: None,
            decision_id: None,
        });
        r.redact(&mut ev);
        let d = &ev.details;
        assert_eq!(d["header"], "Authorization: Bearer [REDACTED]");
        assert_eq!(d["key"], "here [REDACTED PRIVATE KEY] there");
        assert!(!d["jwt"].as_str().unwrap().contains("eyJ"));
        assert_eq!(d["card"], "pay with [card ****1111] now");
        assert_eq!(d["card_number"], "[card ****1111]");
        assert_eq!(
            d["not_card"], "4111 1111 1111 1112",
            "Luhn-invalid numbers stay"
        );
        assert_eq!(d["order"], "order 1234567890123");
        assert_eq!(d["nested"]["list"][0]["Password"], REDACTED);
        assert_eq!(d["nested"]["list"][1], "fine");
        assert_eq!(d["client_secret"], REDACTED);
        assert_eq!(d["aws"], REDACTED);
        assert_eq!(d["n"], 5);
        assert_eq!(ev.resource, "db:[REDACTED JWT]");
        assert_eq!(ev.decision.unwrap().reasons[0], "bad card [card ****0004]");
    }

    #[test]
    fn configured_paths() {
        let r = Redactor::new()
            .with_path("/params/*/ssn")
            .unwrap()
            .with_path("/env/DB_URL")
            .unwrap();
        let mut ev = event(json!({
            "params": [{"ssn": "123-45-6789", "name": "a"}, {"ssn": 42}],
            "env": {"DB_URL": "postgres://u:p@h/db", "HOME": "/root"},
        }));
        r.redact(&mut ev);
        assert_eq!(ev.details["params"][0]["ssn"], REDACTED);
        assert_eq!(ev.details["params"][1]["ssn"], REDACTED);
        assert_eq!(ev.details["params"][0]["name"], "a");
        assert_eq!(ev.details["env"]["DB_URL"], REDACTED);
        assert_eq!(ev.details["env"]["HOME"], "/root");
        let err = Redactor::new().with_path("no-slash").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
    }

    /// `redact_text` without its pre-checks: every pattern runs on every string.
    fn reference_text(text: &str) -> String {
        let out = PEM_PRIVATE_KEY.replace_all(text, "[REDACTED PRIVATE KEY]");
        let out = JWT.replace_all(&out, "[REDACTED JWT]").into_owned();
        let out = BEARER
            .replace_all(&out, |c: &Captures<'_>| {
                format!("{}{}{REDACTED}", &c[1], &c[2])
            })
            .into_owned();
        let out = AWS_ACCESS_KEY.replace_all(&out, REDACTED).into_owned();
        CARD.replace_all(&out, |c: &Captures<'_>| {
            mask_card(&c[0]).unwrap_or_else(|| c[0].to_owned())
        })
        .into_owned()
    }

    fn fragments() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let fragment = prop_oneof![
            Just(String::from("Bearer ")),
            Just(String::from("bEaReR\t")),
            Just(String::from("BASIC  ")),
            Just(String::from("toKen ")),
            Just(String::from("baſic ")),
            Just(String::from("\u{212A}")),
            Just(String::from("AKIA")),
            Just(String::from("ASIA")),
            Just(String::from("ABCDEFGHIJKLMNOP")),
            Just(String::from("4111 1111 1111 1111")),
            Just(String::from("0123456789")),
            Just(String::from("eyJabcd.efgh.ij")),
            Just(String::from("-----BEGIN PRIVATE KEY-----")),
            Just(String::from(" ")),
            Just(String::from("x")),
            Just(String::from("é")),
            "[a-zA-Z0-9 ._~+/=-]{0,8}",
        ];
        proptest::collection::vec(fragment, 0..8).prop_map(|parts| parts.concat())
    }

    proptest::proptest! {
        /// The pre-checks only skip patterns that cannot match.
        #[test]
        fn pre_checks_change_nothing(text in fragments()) {
            proptest::prop_assert_eq!(redact_text(&text).into_owned(), reference_text(&text));
        }

        /// Integers too short to be cards are left alone, as the full check would.
        #[test]
        fn short_integers_are_never_cards(n in proptest::prelude::any::<i64>()) {
            let number = serde_json::Number::from(n);
            if too_short_for_a_card(&number) {
                proptest::prop_assert_eq!(mask_card(&number.to_string()), None);
            }
        }
    }

    #[test]
    fn secret_keys_ignore_ascii_case_only() {
        assert!(is_secret_key("X-API_KEY"));
        assert!(is_secret_key("dbPassWord"));
        assert!(!is_secret_key("passwörd"));
        assert!(!is_secret_key("pass"));
    }

    #[test]
    fn unterminated_pem_is_redacted_to_the_end() {
        let text = "-----BEGIN PRIVATE KEY-----\nMIIE...truncated";
        assert_eq!(Redactor::redact_str(text), "[REDACTED PRIVATE KEY]");
        assert!(matches!(
            Redactor::redact_str("plain text"),
            Cow::Borrowed(_)
        ));
    }
}
