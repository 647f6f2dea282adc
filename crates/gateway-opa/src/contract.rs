//! The policy contract shared by every backend: where the decision lives
//! ([`DecisionPath`]), how the input document is checked and encoded ([`InputLimits`]), and how
//! a decision document becomes a [`Decision`] ([`parse_decision`]).
//!
//! Both backends call the same functions here, so OPA and the embedded engine can only differ
//! in how they evaluate Rego, never in how the gateway reads the answer.

use crate::error::SetupError;
use gateway_core::approval::ApprovalRule;
use gateway_core::policy::{
    Decision, ListingInput, NetworkAccess, Obligations, PolicyError, PolicyInput, RunnerObligations,
};
use serde_json::Value;
use std::fmt;

/// The rule the gateway queries unless configured otherwise.
pub const DEFAULT_DECISION_PATH: &str = "data.agent_gateway.authz.decision";

/// The catalog listing rule queried by default (`visible_actions`, policies/README.md).
pub const DEFAULT_LISTING_PATH: &str = "data.agent_gateway.authz.visible_actions";

/// The deepest input document accepted (the document itself is depth 1).
pub const MAX_INPUT_DEPTH: usize = 64;

/// The largest encoded input document accepted by default, in bytes.
pub const DEFAULT_MAX_INPUT_BYTES: usize = 256 * 1024;

/// The reason of a deny whose policy gave none (the gateway requires every deny to say why).
pub const NO_REASON: &str = "denied by policy (no reason given)";

/// The reason of a deny when the decision rule is undefined for the input.
pub const POLICY_UNDEFINED: &str = "policy undefined";

/// A validated Rego rule path such as `data.agent_gateway.authz.decision`.
///
/// Accepts `data.a.b`, `a.b`, `a/b` or `/a/b`; each segment is a Rego identifier
/// (`[A-Za-z_][A-Za-z0-9_]*`), which keeps it safe to splice into a URL and a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionPath {
    segments: Vec<String>,
}

impl DecisionPath {
    /// Parses and validates a rule path.
    pub fn parse(path: &str) -> Result<Self, SetupError> {
        let trimmed = path.trim().trim_start_matches('/');
        let separator = if trimmed.contains('/') { '/' } else { '.' };
        let mut segments: Vec<String> = trimmed.split(separator).map(str::to_owned).collect();
        if segments.first().is_some_and(|s| s == "data") {
            segments.remove(0);
        }
        let valid_segment = |s: &String| {
            let mut chars = s.chars();
            chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        };
        if segments.is_empty() || !segments.iter().all(valid_segment) {
            return Err(SetupError::config(format!(
                "decision path {path:?} must be a rule path like {DEFAULT_DECISION_PATH}"
            )));
        }
        if segments.len() < 2 {
            return Err(SetupError::config(format!(
                "decision path {path:?} must name a package and a rule"
            )));
        }
        Ok(Self { segments })
    }

    /// The rule reference, e.g. `data.agent_gateway.authz.decision`.
    pub fn rule(&self) -> String {
        format!("data.{}", self.segments.join("."))
    }

    /// The Data API path below `/v1/data/`, e.g. `agent_gateway/authz/decision`.
    pub fn url_path(&self) -> String {
        self.segments.join("/")
    }
}

impl Default for DecisionPath {
    fn default() -> Self {
        Self {
            segments: vec!["agent_gateway".into(), "authz".into(), "decision".into()],
        }
    }
}

impl fmt::Display for DecisionPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.rule())
    }
}

/// Bounds on the input document, checked before any engine sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputLimits {
    /// Maximum nesting depth (the document itself is depth 1); at most [`MAX_INPUT_DEPTH`]
    /// is sensible, since deeper documents cost stack in every JSON consumer.
    pub max_depth: usize,
    /// Maximum size of the encoded JSON document, in bytes.
    pub max_bytes: usize,
}

impl Default for InputLimits {
    fn default() -> Self {
        Self {
            max_depth: MAX_INPUT_DEPTH,
            max_bytes: DEFAULT_MAX_INPUT_BYTES,
        }
    }
}

impl InputLimits {
    /// Checks and encodes a typed input as the contract's JSON document.
    pub fn encode(&self, input: &PolicyInput) -> Result<String, PolicyError> {
        self.check_nesting(input)?;
        let encoded = serde_json::to_string(input).map_err(cannot_encode)?;
        self.check_size(encoded.len())?;
        Ok(encoded)
    }

    /// Checks and encodes a catalog listing's input, like [`encode`](Self::encode).
    pub fn encode_listing(&self, input: &ListingInput) -> Result<String, PolicyError> {
        self.check_listing_nesting(input)?;
        let encoded = serde_json::to_string(input).map_err(cannot_encode)?;
        self.check_size(encoded.len())?;
        Ok(encoded)
    }

    /// The depth checks of [`encode_listing`](Self::encode_listing): only the agent's
    /// attributes and the context are free-form.
    pub(crate) fn check_listing_nesting(&self, input: &ListingInput) -> Result<(), PolicyError> {
        for (key, value) in &input.context {
            check_depth(value, 3, self.max_depth, || format!("context.{key}"))?;
        }
        for (key, value) in &input.agent.attributes {
            check_depth(value, 4, self.max_depth, || {
                format!("agent.attributes.{key}")
            })?;
        }
        Ok(())
    }

    /// Checks and encodes a raw input document (for callers that build their own document):
    /// it must be a JSON object within the depth and size limits.
    pub fn encode_document(&self, document: &Value) -> Result<String, PolicyError> {
        self.check_document_shape(document)?;
        let encoded = serde_json::to_string(document).map_err(cannot_encode)?;
        self.check_size(encoded.len())?;
        Ok(encoded)
    }

    /// The size check for engines that take the input in another form than JSON text:
    /// `upper_bound` bounds the length of `value`'s JSON encoding; only when it exceeds the limit
    /// is the exact length counted (so typical inputs are never encoded at all).
    pub(crate) fn check_size_within<T: serde::Serialize + ?Sized>(
        &self,
        value: &T,
        upper_bound: usize,
    ) -> Result<(), PolicyError> {
        if upper_bound <= self.max_bytes {
            return Ok(());
        }
        self.check_size(encoded_len(value)?)
    }

    /// The depth checks of [`encode`](Self::encode).
    pub(crate) fn check_nesting(&self, input: &PolicyInput) -> Result<(), PolicyError> {
        // The fixed fields nest at most 3 deep; only the free-form values can go deeper. They
        // are checked before serialising, iteratively, so a hostile value cannot exhaust the
        // stack here.
        check_depth(&input.params, 2, self.max_depth, || "params".into())?;
        for (key, value) in &input.context {
            check_depth(value, 3, self.max_depth, || format!("context.{key}"))?;
        }
        for (key, value) in &input.agent.attributes {
            check_depth(value, 4, self.max_depth, || {
                format!("agent.attributes.{key}")
            })?;
        }
        Ok(())
    }

    /// The shape and depth checks of [`encode_document`](Self::encode_document).
    pub(crate) fn check_document_shape(&self, document: &Value) -> Result<(), PolicyError> {
        if !document.is_object() {
            return Err(PolicyError::invalid_input(format!(
                "input document must be an object, got {}",
                type_name(document)
            )));
        }
        check_depth(document, 1, self.max_depth, || "input".into())
    }

    fn check_size(&self, len: usize) -> Result<(), PolicyError> {
        if len > self.max_bytes {
            return Err(PolicyError::invalid_input(format!(
                "input document is {len} bytes, over the limit of {} bytes",
                self.max_bytes
            )));
        }
        Ok(())
    }
}

/// The length of `value`'s JSON encoding, counted without building it.
fn encoded_len<T: serde::Serialize + ?Sized>(value: &T) -> Result<usize, PolicyError> {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    serde_json::to_writer(&mut counter, value).map_err(cannot_encode)?;
    Ok(counter.0)
}

fn cannot_encode(e: serde_json::Error) -> PolicyError {
    PolicyError::invalid_input(format!("input cannot be encoded as JSON: {e}"))
}

/// Fails if `value`, found at depth `start`, nests deeper than `max` (iterative walk).
/// `field` names the value in the error (built only then: this runs on every decision).
fn check_depth(
    value: &Value,
    start: usize,
    max: usize,
    field: impl FnOnce() -> String,
) -> Result<(), PolicyError> {
    let mut stack = vec![(value, start)];
    while let Some((value, depth)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match value {
            Value::Array(items) => Box::new(items.iter()),
            Value::Object(map) => Box::new(map.values()),
            _ => continue,
        };
        if depth > max {
            return Err(PolicyError::invalid_input(format!(
                "input field `{}` nests deeper than {max} levels",
                field()
            )));
        }
        stack.extend(children.map(|child| (child, depth + 1)));
    }
    Ok(())
}

/// The JSON type of a value, for error messages.
pub(crate) fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn malformed(message: impl Into<String>) -> PolicyError {
    PolicyError::Malformed {
        message: message.into(),
    }
}

fn wrong_type(field: &str, expected: &str, got: &impl Document) -> PolicyError {
    malformed(format!(
        "field `{field}` must be {expected}, got {}",
        got.type_name()
    ))
}

/// What the decision parser reads of a document, so that JSON (from OPA) and the embedded
/// engine's values are parsed by the same code. Implementations must answer exactly as the
/// document's JSON form would.
pub(crate) trait Document {
    /// The JSON type name, for error messages.
    fn type_name(&self) -> &'static str;
    /// The boolean, if this is one.
    fn as_bool(&self) -> Option<bool>;
    /// The string, if this is one.
    fn as_str(&self) -> Option<&str>;
    /// Whether this is an object.
    fn is_object(&self) -> bool;
    /// The field `key` of an object (`None` when missing or not an object).
    fn field(&self, key: &str) -> Option<&Self>;
    /// An object's fields in key order (none when not an object).
    fn fields(&self) -> impl Iterator<Item = (&str, &Self)>;
    /// An array's items (`None` when not an array).
    fn items(&self) -> Option<impl Iterator<Item = &Self>>;
    /// A number as an unsigned integer if it is one (as `serde_json::Number::as_u64`), else
    /// as a float (`as_f64`), with its text for messages; `None` when not a number.
    fn number(&self) -> Option<(Option<u64>, Option<f64>, String)>;
}

impl Document for Value {
    fn type_name(&self) -> &'static str {
        type_name(self)
    }
    fn as_bool(&self) -> Option<bool> {
        self.as_bool()
    }
    fn as_str(&self) -> Option<&str> {
        self.as_str()
    }
    fn is_object(&self) -> bool {
        self.is_object()
    }
    fn field(&self, key: &str) -> Option<&Self> {
        self.as_object().and_then(|map| map.get(key))
    }
    fn fields(&self) -> impl Iterator<Item = (&str, &Self)> {
        self.as_object()
            .into_iter()
            .flat_map(|map| map.iter().map(|(k, v)| (k.as_str(), v)))
    }
    fn items(&self) -> Option<impl Iterator<Item = &Self>> {
        self.as_array().map(|items| items.iter())
    }
    fn number(&self) -> Option<(Option<u64>, Option<f64>, String)> {
        match self {
            Value::Number(n) => Some((n.as_u64(), n.as_f64(), n.to_string())),
            _ => None,
        }
    }
}

/// Turns the value of the listing rule into action names: a set or array of strings (OPA's
/// Data API returns a set as an array). Undefined (`None`: the rule has no value for this
/// input) lists nothing. Anything else is [`PolicyError::Malformed`]; the gateway then lists
/// nothing.
pub fn parse_listing(value: Option<&Value>) -> Result<Vec<String>, PolicyError> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    let malformed = |what: &str| PolicyError::Malformed {
        message: format!("visible_actions must be a set of action names, got {what}"),
    };
    let Value::Array(items) = value else {
        return Err(malformed(type_name(value)));
    };
    items
        .iter()
        .map(|item| {
            item.as_str()
                .map(str::to_owned)
                .ok_or_else(|| malformed(&format!("an element of type {}", type_name(item))))
        })
        .collect()
}

/// Turns a decision document (the value of the decision rule) into a [`Decision`].
///
/// `allow` (boolean) is required. Optional fields and their defaults: `reasons` (array of
/// strings, `[]`), `max_ttl_seconds` (non-negative integer, none: the gateway's maximum),
/// `scopes` (array of strings, `[]`), `require_approval` (boolean, `false`), `approval` (object:
/// `quorum` 1–16, default 1; `separate_from_owner`, default `true`), `runner` (object,
/// see [`RunnerObligations`]; network `none`). A field present with the wrong type (`null`
/// included), an unknown key inside `runner`, or a document that is not an object is
/// [`PolicyError::Malformed`] naming the field. Other top-level keys are ignored, so policies
/// may return extra diagnostics. A deny without reasons gets [`NO_REASON`].
pub fn parse_decision(document: &Value) -> Result<Decision, PolicyError> {
    parse_document(document)
}

/// [`parse_decision`] for any [`Document`].
pub(crate) fn parse_document(doc: &impl Document) -> Result<Decision, PolicyError> {
    if !doc.is_object() {
        return Err(malformed(format!(
            "the decision must be an object, got {}",
            doc.type_name()
        )));
    }
    let allow = match doc.field("allow") {
        Some(value) => value
            .as_bool()
            .ok_or_else(|| wrong_type("allow", "a boolean", value))?,
        None => return Err(malformed("field `allow` is missing")),
    };
    let mut reasons = optional_strings(doc, "reasons")?.unwrap_or_default();
    if !allow && reasons.is_empty() {
        reasons.push(NO_REASON.to_owned());
    }
    let max_ttl_seconds = match doc.field("max_ttl_seconds") {
        None => None,
        Some(v) => Some(uint(v, "max_ttl_seconds", u64::MAX)?),
    };
    let scopes = optional_strings(doc, "scopes")?.unwrap_or_default();
    let require_approval = match doc.field("require_approval") {
        None => false,
        Some(value) => value
            .as_bool()
            .ok_or_else(|| wrong_type("require_approval", "a boolean", value))?,
    };
    let approval = match doc.field("approval") {
        None => ApprovalRule::default(),
        Some(approval) if approval.is_object() => parse_approval(approval)?,
        Some(other) => return Err(wrong_type("approval", "an object", other)),
    };
    let runner = match doc.field("runner") {
        None => RunnerObligations::default(),
        Some(runner) if runner.is_object() => parse_runner(runner)?,
        Some(other) => return Err(wrong_type("runner", "an object", other)),
    };
    let mut decision = if allow {
        Decision::allow()
    } else {
        Decision::deny(String::new())
    };
    decision.reasons = reasons;
    decision.obligations = Obligations {
        max_ttl_seconds,
        scopes,
        require_approval,
        approval,
        runner,
    };
    Ok(decision)
}

/// `approval`: `quorum` (1 to [`ApprovalRule::MAX_QUORUM`]) and `separate_from_owner`
/// (boolean); any other key is refused, like an unknown runner obligation.
fn parse_approval(approval: &impl Document) -> Result<ApprovalRule, PolicyError> {
    let mut out = ApprovalRule::default();
    for (key, value) in approval.fields() {
        match key {
            "quorum" => {
                let quorum = uint(value, "approval.quorum", ApprovalRule::MAX_QUORUM.into())?;
                if quorum == 0 {
                    return Err(malformed("field `approval.quorum` must be at least 1"));
                }
                out.quorum = narrow(quorum);
            }
            "separate_from_owner" => {
                out.separate_from_owner = value.as_bool().ok_or_else(|| {
                    wrong_type("approval.separate_from_owner", "a boolean", value)
                })?;
            }
            other => {
                return Err(malformed(format!(
                    "field `approval.{other}` is not a known approval setting"
                )));
            }
        }
    }
    Ok(out)
}

fn optional_strings(doc: &impl Document, field: &str) -> Result<Option<Vec<String>>, PolicyError> {
    let Some(value) = doc.field(field) else {
        return Ok(None);
    };
    let Some(items) = value.items() else {
        return Err(wrong_type(field, "an array of strings", value));
    };
    items
        .enumerate()
        .map(|(i, item)| match item.as_str() {
            Some(s) => Ok(s.to_owned()),
            None => Err(wrong_type(&format!("{field}[{i}]"), "a string", item)),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// A non-negative integer no larger than `max`. Integral floats (`300.0`) are accepted because
/// some engines print every number as a float.
fn uint(value: &impl Document, field: &str, max: u64) -> Result<u64, PolicyError> {
    let expected = "a non-negative integer";
    let Some((as_u64, as_f64, text)) = value.number() else {
        return Err(wrong_type(field, expected, value));
    };
    let parsed = as_u64.or_else(|| {
        as_f64
            // 2^53: above it, floats no longer denote one integer.
            .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= 9_007_199_254_740_992.0)
            .map(|f| f as u64)
    });
    match parsed {
        Some(v) if v <= max => Ok(v),
        Some(v) => Err(malformed(format!(
            "field `{field}` is {v}, over the maximum {max}"
        ))),
        None => Err(malformed(format!(
            "field `{field}` must be {expected}, got {text}"
        ))),
    }
}

fn parse_runner(runner: &impl Document) -> Result<RunnerObligations, PolicyError> {
    let mut out = RunnerObligations::default();
    for (key, value) in runner.fields() {
        match key {
            "network" => out.network = parse_network(value)?,
            "cpu_millis" => {
                out.cpu_millis = Some(narrow(uint(value, "runner.cpu_millis", u32::MAX.into())?))
            }
            "memory_bytes" => {
                out.memory_bytes = Some(uint(value, "runner.memory_bytes", u64::MAX)?)
            }
            "pids" => out.pids = Some(narrow(uint(value, "runner.pids", u32::MAX.into())?)),
            "timeout_seconds" => {
                out.timeout_seconds = Some(uint(value, "runner.timeout_seconds", u64::MAX)?)
            }
            // An obligation the gateway does not know cannot be enforced: refuse it.
            other => {
                return Err(malformed(format!(
                    "field `runner.{other}` is not a known runner obligation"
                )));
            }
        }
    }
    Ok(out)
}

/// `uint` already bounded the value by `u32::MAX`.
fn narrow(value: u64) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

fn parse_network(network: &impl Document) -> Result<NetworkAccess, PolicyError> {
    if !network.is_object() {
        return Err(wrong_type("runner.network", "an object", network));
    }
    if let Some((other, _)) = network
        .fields()
        .find(|(k, _)| *k != "mode" && *k != "destinations")
    {
        return Err(malformed(format!(
            "field `runner.network.{other}` is not a known network setting"
        )));
    }
    let mode = network.field("mode");
    match mode.map(|m| (m, m.as_str())) {
        Some((_, Some("none"))) => {
            if network.field("destinations").is_some() {
                return Err(malformed(
                    "field `runner.network.destinations` is only valid with mode \"allowlist\"",
                ));
            }
            Ok(NetworkAccess::None)
        }
        Some((_, Some("allowlist"))) => {
            let destinations = optional_strings(network, "destinations")
                .map_err(|e| match e {
                    PolicyError::Malformed { message } => {
                        malformed(message.replace("`destinations", "`runner.network.destinations"))
                    }
                    other => other,
                })?
                .ok_or_else(|| malformed("field `runner.network.destinations` is missing"))?;
            Ok(NetworkAccess::Allowlist { destinations })
        }
        Some((_, Some(mode))) => Err(malformed(format!(
            "field `runner.network.mode` must be \"none\" or \"allowlist\", got {mode:?}"
        ))),
        Some((other, None)) => Err(wrong_type("runner.network.mode", "a string", other)),
        None => Err(malformed("field `runner.network.mode` is missing")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn message(err: PolicyError) -> String {
        match err {
            PolicyError::Malformed { message } => message,
            other => panic!("expected Malformed, got {other:?}"),
        }
    }

    #[test]
    fn full_decision_parses() {
        let d = parse_decision(&json!({
            "allow": true, "reasons": ["ok"], "max_ttl_seconds": 300, "scopes": ["a", "b"],
            "require_approval": true,
            "approval": {"quorum": 2, "separate_from_owner": false},
            "runner": {"network": {"mode": "allowlist", "destinations": ["10.0.0.1:5432"]},
                       "cpu_millis": 500, "memory_bytes": 1048576, "pids": 64, "timeout_seconds": 30},
            "debug": {"anything": "ignored"}
        }))
        .unwrap();
        assert!(d.allow);
        assert_eq!(d.reasons, vec!["ok"]);
        assert_eq!(d.obligations.max_ttl_seconds, Some(300));
        assert_eq!(d.obligations.scopes, vec!["a", "b"]);
        assert!(d.obligations.require_approval);
        assert_eq!(
            d.obligations.approval,
            ApprovalRule {
                quorum: 2,
                separate_from_owner: false
            }
        );
        assert_eq!(
            d.obligations.runner.network,
            NetworkAccess::Allowlist {
                destinations: vec!["10.0.0.1:5432".into()]
            }
        );
        assert_eq!(d.obligations.runner.cpu_millis, Some(500));
        assert_eq!(d.obligations.runner.memory_bytes, Some(1_048_576));
        assert_eq!(d.obligations.runner.pids, Some(64));
        assert_eq!(d.obligations.runner.timeout_seconds, Some(30));
    }

    #[test]
    fn defaults_apply_and_denies_always_say_why() {
        let d = parse_decision(&json!({"allow": false})).unwrap();
        assert!(!d.allow);
        assert_eq!(d.reasons, vec![NO_REASON]);
        assert_eq!(d.obligations, Obligations::default());
        let d = parse_decision(&json!({"allow": true})).unwrap();
        assert!(d.allow && d.reasons.is_empty());
        assert_eq!(d.obligations.max_ttl_seconds, None);
    }

    #[test]
    fn integral_floats_are_integers() {
        let d = parse_decision(&json!({"allow": true, "max_ttl_seconds": 60.0})).unwrap();
        assert_eq!(d.obligations.max_ttl_seconds, Some(60));
    }

    #[test]
    fn every_malformed_field_is_named() {
        let cases = [
            (json!(false), "the decision must be an object, got boolean"),
            (json!([]), "got array"),
            (json!({}), "`allow` is missing"),
            (
                json!({"allow": "true"}),
                "`allow` must be a boolean, got string",
            ),
            (
                json!({"allow": null}),
                "`allow` must be a boolean, got null",
            ),
            (
                json!({"allow": true, "reasons": "x"}),
                "`reasons` must be an array",
            ),
            (
                json!({"allow": true, "reasons": [1]}),
                "`reasons[0]` must be a string",
            ),
            (
                json!({"allow": true, "max_ttl_seconds": -1}),
                "`max_ttl_seconds` must be a non-negative integer",
            ),
            (
                json!({"allow": true, "max_ttl_seconds": 1.5}),
                "`max_ttl_seconds` must be a non-negative integer",
            ),
            (
                json!({"allow": true, "max_ttl_seconds": "60"}),
                "`max_ttl_seconds` must be a non-negative integer, got string",
            ),
            (
                json!({"allow": true, "scopes": [null]}),
                "`scopes[0]` must be a string",
            ),
            (
                json!({"allow": true, "require_approval": 1}),
                "`require_approval` must be a boolean",
            ),
            (
                json!({"allow": true, "approval": {"quorum": 0}}),
                "`approval.quorum` must be at least 1",
            ),
            (
                json!({"allow": true, "approval": {"quorum": 17}}),
                "approval.quorum",
            ),
            (
                json!({"allow": true, "approval": {"separate_from_owner": "yes"}}),
                "`approval.separate_from_owner` must be a boolean",
            ),
            (
                json!({"allow": true, "approval": {"quorom": 2}}),
                "`approval.quorom` is not a known approval setting",
            ),
            (
                json!({"allow": true, "runner": []}),
                "`runner` must be an object",
            ),
            (
                json!({"allow": true, "runner": {"gpu": 1}}),
                "`runner.gpu` is not a known",
            ),
            (
                json!({"allow": true, "runner": {"cpu_millis": 5_000_000_000u64}}),
                "`runner.cpu_millis` is 5000000000, over the maximum",
            ),
            (
                json!({"allow": true, "runner": {"pids": "4"}}),
                "`runner.pids` must be",
            ),
            (
                json!({"allow": true, "runner": {"network": "none"}}),
                "`runner.network` must be an object",
            ),
            (
                json!({"allow": true, "runner": {"network": {}}}),
                "`runner.network.mode` is missing",
            ),
            (
                json!({"allow": true, "runner": {"network": {"mode": "open"}}}),
                "`runner.network.mode` must be \"none\" or \"allowlist\"",
            ),
            (
                json!({"allow": true, "runner": {"network": {"mode": "allowlist"}}}),
                "`runner.network.destinations` is missing",
            ),
            (
                json!({"allow": true, "runner": {"network": {"mode": "allowlist", "destinations": [1]}}}),
                "`runner.network.destinations[0]` must be a string",
            ),
            (
                json!({"allow": true, "runner": {"network": {"mode": "none", "destinations": []}}}),
                "only valid with mode",
            ),
            (
                json!({"allow": true, "runner": {"network": {"mode": "none", "proxy": "x"}}}),
                "`runner.network.proxy`",
            ),
        ];
        for (doc, expected) in cases {
            let got = message(parse_decision(&doc).unwrap_err());
            assert!(
                got.contains(expected),
                "{doc}: {got:?} does not contain {expected:?}"
            );
        }
    }

    #[test]
    fn decision_paths() {
        for ok in [
            "data.agent_gateway.authz.decision",
            "agent_gateway.authz.decision",
            "agent_gateway/authz/decision",
            "/agent_gateway/authz/decision",
        ] {
            let p = DecisionPath::parse(ok).unwrap();
            assert_eq!(p, DecisionPath::default(), "{ok}");
            assert_eq!(p.url_path(), "agent_gateway/authz/decision");
            assert_eq!(p.rule(), DEFAULT_DECISION_PATH);
        }
        for bad in [
            "", "data", "decision", "a..b", "a.b-c", "a/../b", "a.b?x=1", "a.1b", "a.b c",
        ] {
            assert!(DecisionPath::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn depth_and_size_limits() {
        let limits = InputLimits {
            max_depth: 4,
            max_bytes: 64,
        };
        assert!(
            limits
                .encode_document(&json!({"a": {"b": {"c": {}}}}))
                .is_ok()
        );
        assert!(
            limits
                .encode_document(&json!({"a": {"b": {"c": {"d": 1}}}}))
                .is_ok()
        );
        let err = limits
            .encode_document(&json!({"a": {"b": {"c": {"d": []}}}}))
            .unwrap_err();
        assert!(matches!(err, PolicyError::InvalidInput { .. }), "{err:?}");
        assert!(err.to_string().contains("deeper than 4"), "{err}");
        let err = limits.encode_document(&json!([1])).unwrap_err();
        assert!(
            err.to_string().contains("must be an object, got array"),
            "{err}"
        );
        let err = limits
            .encode_document(&json!({"a": "x".repeat(100)}))
            .unwrap_err();
        assert!(
            err.to_string().contains("over the limit of 64 bytes"),
            "{err}"
        );
    }
}
