//! An action's params schema: one JSON Schema that is at once what agents are shown (MCP
//! `tools/list`, the HTTP catalog) and what the gateway enforces.
//!
//! Before, an action's constraints were written three times (the published schema, a
//! hand-written validator, the job builder) and drifted: MCP clients were shown a schema that
//! accepted calls the gateway then refused. A [`ParamsSchema`] is compiled once, when the action
//! is defined, and every request's params are checked against exactly the value that is
//! published.
//!
//! Choices, and why:
//! - **Draft 2020-12** only: one dialect to document and test. A `$schema` naming another
//!   draft is refused rather than read under other rules.
//! - **No retrieval.** A `$ref` to anything outside the schema itself is refused when the
//!   schema is compiled: checking params must never make the gateway reach the network or the
//!   disk (and the crate is built without its HTTP and file resolvers).
//! - **Linear-time patterns.** `pattern` is compiled with the `regex` crate, not a backtracking
//!   engine, so no agent string can make a check slow; a pattern that needs backtracking
//!   (look-around, back-references) is refused when the schema is compiled.
//! - **Formats are asserted** (`"format": "uuid"` is a constraint, not a comment).
//! - **Errors name where and which keyword, never the value**: an agent's params may hold
//!   secrets, and refusals are recorded in the audit trail and returned to the caller.

use crate::text::truncate;
use std::fmt;
use std::sync::Arc;

/// The only draft a params schema may declare in `$schema`.
pub const DRAFT_2020_12: &str = "https://json-schema.org/draft/2020-12/schema";

/// The most failures one refusal lists (the rest are counted).
const MAX_REPORTED: usize = 8;

/// Params a schema refused: where and which keyword, values masked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SchemaViolation {
    message: String,
}

/// A params JSON Schema, compiled.
#[derive(Clone)]
pub struct ParamsSchema {
    value: Arc<serde_json::Value>,
    validator: Arc<jsonschema::Validator>,
}

/// Why a params schema could not be compiled.
#[derive(Debug, thiserror::Error)]
#[error("{}params schema does not compile: {message}", action_prefix(.action))]
pub struct SchemaError {
    action: Option<String>,
    message: String,
}

fn action_prefix(action: &Option<String>) -> String {
    action
        .as_ref()
        .map(|a| format!("action {a}: "))
        .unwrap_or_default()
}

impl SchemaError {
    /// The same error, naming the action whose schema it is.
    pub(crate) fn for_action(mut self, action: &str) -> Self {
        self.action = Some(action.to_owned());
        self
    }

    /// The action whose schema failed, when known.
    pub fn action(&self) -> Option<&str> {
        self.action.as_deref()
    }
}

impl fmt::Debug for ParamsSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ParamsSchema").field(&self.value).finish()
    }
}

impl PartialEq for ParamsSchema {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

/// Refuses every retrieval: a schema is self-contained.
struct NoRetrieval;

impl jsonschema::Retrieve for NoRetrieval {
    fn retrieve(
        &self,
        uri: &jsonschema::Uri<String>,
    ) -> Result<serde_json::Value, Box<dyn std::error::Error + Send + Sync>> {
        Err(format!("{uri} is outside the schema: params schemas are self-contained").into())
    }
}

impl ParamsSchema {
    /// Compiles `schema` (draft 2020-12). A schema that is not valid JSON Schema, refers to
    /// anything outside itself, or uses a pattern the linear-time engine cannot run is refused.
    pub fn new(schema: serde_json::Value) -> Result<Self, SchemaError> {
        if let Some(declared) = schema.get("$schema")
            && declared.as_str() != Some(DRAFT_2020_12)
        {
            return Err(SchemaError {
                action: None,
                message: format!("$schema must be {DRAFT_2020_12:?} or absent"),
            });
        }
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .with_retriever(NoRetrieval)
            .with_pattern_options(jsonschema::PatternOptions::regex())
            .should_validate_formats(true)
            .build(&schema)
            .map_err(|e| SchemaError {
                action: None,
                message: e.to_string(),
            })?;
        Ok(Self {
            value: Arc::new(schema),
            validator: Arc::new(validator),
        })
    }

    /// The schema any object is valid against (`{"type": "object"}`).
    pub fn any_object() -> Self {
        // A constant schema that compiles: covered by the tests below.
        #[allow(clippy::expect_used)]
        Self::new(serde_json::json!({"type": "object"})).expect("the object schema compiles")
    }

    /// The schema exactly as given: what is published to agents.
    pub fn as_value(&self) -> &serde_json::Value {
        &self.value
    }

    /// Checks `params`. A refusal lists up to eight failures, each as its instance path (JSON
    /// Pointer) and keyword, with the values masked.
    pub fn validate(&self, params: &serde_json::Value) -> Result<(), SchemaViolation> {
        let mut failures = Vec::new();
        let mut more = 0usize;
        for error in self.validator.iter_errors(params) {
            if failures.len() == MAX_REPORTED {
                more += 1;
                continue;
            }
            let path = error.instance_path().to_string();
            let path = if path.is_empty() {
                "/".to_owned()
            } else {
                path
            };
            failures.push(format!(
                "at {path}: {} ({})",
                truncate(&error.masked().to_string(), 200),
                error.kind().keyword()
            ));
        }
        if failures.is_empty() {
            return Ok(());
        }
        let mut message = format!("params do not match the schema: {}", failures.join("; "));
        if more > 0 {
            message.push_str(&format!("; and {more} more"));
        }
        Err(SchemaViolation { message })
    }
}

impl serde::Serialize for ParamsSchema {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(serializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> ParamsSchema {
        ParamsSchema::new(json!({
            "type": "object",
            "properties": {
                "name": {"type": "string", "pattern": "^[a-z]{1,8}$"},
                "replicas": {"type": "integer", "minimum": 0, "maximum": 5},
                "id": {"type": "string", "format": "uuid"}
            },
            "required": ["name"],
            "additionalProperties": false
        }))
        .unwrap()
    }

    #[test]
    fn the_object_schema_compiles_and_accepts_any_object() {
        let any = ParamsSchema::any_object();
        assert!(any.validate(&json!({"x": [1, {"y": null}]})).is_ok());
        assert!(any.validate(&json!([1])).is_err());
    }

    #[test]
    fn refusals_name_path_and_keyword_but_not_the_value() {
        let s = schema();
        assert!(s.validate(&json!({"name": "web", "replicas": 3})).is_ok());
        let secret = "hunter2-correct-horse-battery";
        let err = s
            .validate(&json!({"name": secret, "replicas": 9, "extra": secret}))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("at /name") && err.contains("(pattern)"),
            "{err}"
        );
        assert!(
            err.contains("at /replicas") && err.contains("(maximum)"),
            "{err}"
        );
        assert!(err.contains("(additionalProperties)"), "{err}");
        assert!(!err.contains(secret), "the value was echoed: {err}");
        let missing = s.validate(&json!({})).unwrap_err().to_string();
        assert!(
            missing.contains("at /:") && missing.contains("(required)"),
            "{missing}"
        );
    }

    #[test]
    fn formats_are_asserted() {
        let err = schema()
            .validate(&json!({"name": "a", "id": "not-a-uuid"}))
            .unwrap_err();
        assert!(err.to_string().contains("(format)"), "{err}");
    }

    #[test]
    fn a_refusal_lists_at_most_eight_failures() {
        let s = ParamsSchema::new(json!({
            "type": "object",
            "additionalProperties": {"type": "integer"}
        }))
        .unwrap();
        let params: serde_json::Map<_, _> =
            (0..20).map(|i| (format!("k{i:02}"), json!("x"))).collect();
        let err = s.validate(&params.into()).unwrap_err().to_string();
        assert_eq!(err.matches("at /").count(), 8, "{err}");
        assert!(err.ends_with("and 12 more"), "{err}");
    }

    #[test]
    fn bad_remote_and_backtracking_schemas_are_refused_when_compiled() {
        for bad in [
            json!({"type": "no-such-type"}),
            json!({"$schema": "http://json-schema.org/draft-07/schema#", "type": "object"}),
            json!({"$ref": "https://example.com/schema.json"}),
            json!({"$ref": "file:///etc/passwd"}),
            json!({"type": "string", "pattern": "^(?=a)a$"}),
            json!({"type": "string", "pattern": "(a)\\1"}),
        ] {
            assert!(ParamsSchema::new(bad.clone()).is_err(), "accepted {bad}");
        }
        // The 2020-12 meta-schema may be named, and a reference inside the schema is fine.
        assert!(ParamsSchema::new(json!({"$schema": DRAFT_2020_12, "type": "object"})).is_ok());
        let local = ParamsSchema::new(json!({
            "$defs": {"n": {"type": "integer"}},
            "type": "object",
            "properties": {"n": {"$ref": "#/$defs/n"}}
        }))
        .unwrap();
        assert!(local.validate(&json!({"n": "x"})).is_err());
    }

    #[test]
    fn the_published_value_is_the_given_value() {
        let value = json!({"type": "object", "description": "kept as written", "x-extra": 1});
        let s = ParamsSchema::new(value.clone()).unwrap();
        assert_eq!(s.as_value(), &value);
        assert_eq!(serde_json::to_value(&s).unwrap(), value);
    }
}
