//! What a tool call returns: one structured document for every outcome, declared as each tool's
//! `outputSchema`, and a summary for people.
//!
//! `structuredContent` is always the action's status document (`GET /v1/actions/{id}` serves
//! the same one): `status` is `completed` (it ran; `outcome` holds the decision, the grant
//! summary without any secret, the runner, the job's exit status and bounded output, and the
//! audit receipt), `failed` (it did not run, or could not be recorded; `error` says why, with
//! the policy's reasons on a denial), `pending_approval` or `running` (poll it with
//! [`STATUS_TOOL`](super::STATUS_TOOL)). A job that ran and failed, and every refusal, is a
//! tool error (`isError: true`) with the same document.

use crate::error::ApiError;
use crate::http::{StatusDoc, status_doc};
use crate::tracker::Phase;
use gateway_core::{ActionOutcome, RequestId};
use rmcp::model::{CallToolResult, ContentBlock};
use serde_json::{Value, json};

/// The JSON Schema (draft 2020-12) of every tool's `structuredContent`.
pub fn output_schema() -> Value {
    let string = json!({"type": "string"});
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "required": ["id", "status", "status_url"],
        "properties": {
            "id": {"type": "string", "format": "uuid"},
            "status": {"enum": ["completed", "failed", "pending_approval", "running"]},
            "status_url": string,
            "approval_deadline": {"type": "string", "format": "date-time"},
            "outcome": {
                "type": "object",
                "required": ["correlation_id", "agent", "action", "decision", "grant", "runner", "job", "audit"],
                "properties": {
                    "correlation_id": {"type": "string", "format": "uuid"},
                    "agent": string,
                    "action": string,
                    "approved_by": string,
                    "decision": {
                        "type": "object",
                        "required": ["allow", "reasons"],
                        "properties": {
                            "allow": {"type": "boolean"},
                            "reasons": {"type": "array", "items": string},
                            "policy_id": string,
                            "decision_id": string
                        }
                    },
                    // Closed: nothing but these may ever appear, so no credential can.
                    "grant": {
                        "type": "object",
                        "required": ["id", "scopes", "ttl_seconds", "not_after", "revoked"],
                        "properties": {
                            "id": string,
                            "scopes": {"type": "array", "items": string},
                            "ttl_seconds": {"type": "integer", "minimum": 0},
                            "not_after": {"type": "string", "format": "date-time"},
                            "revoked": {"type": "boolean"}
                        },
                        "additionalProperties": false
                    },
                    "runner": {"type": "object"},
                    "job": {
                        "type": "object",
                        "required": ["status", "stdout", "stderr", "stdout_truncated", "stderr_truncated", "duration"],
                        "properties": {
                            "status": {
                                "type": "object",
                                "required": ["status"],
                                "properties": {
                                    "status": {"enum": ["exited", "signaled", "timed_out", "oom_killed", "cancelled"]},
                                    "code": {"type": "integer"},
                                    "signal": {"type": "integer"}
                                }
                            },
                            "stdout": string,
                            "stderr": string,
                            "stdout_truncated": {"type": "boolean"},
                            "stderr_truncated": {"type": "boolean"},
                            "duration": {"type": "integer", "minimum": 0, "description": "milliseconds"}
                        }
                    },
                    "audit": {
                        "type": "object",
                        "required": ["stream_id", "sequence", "hash"],
                        "properties": {
                            "stream_id": string,
                            "sequence": {"type": "integer", "minimum": 0},
                            "hash": string
                        }
                    }
                }
            },
            "error": {
                "type": "object",
                "required": ["kind", "message"],
                "properties": {
                    "kind": string,
                    "message": string,
                    "correlation_id": {"type": ["string", "null"]},
                    "reasons": {"type": "array", "items": string}
                }
            }
        }
    })
}

/// The result of a call whose action is in `phase`.
pub(crate) fn phase_result(id: RequestId, phase: &Phase) -> CallToolResult {
    let doc = status_doc(id, phase);
    let (text, is_error) = match phase {
        Phase::Done(result) => match result.as_ref() {
            Ok(outcome) => (outcome_summary(outcome), !outcome.job.succeeded()),
            Err(e) => (error_summary(&ApiError::from(e)), true),
        },
        Phase::PendingApproval { deadline } => (
            format!(
                "action {id} is waiting for human approval (deadline {deadline}); call {} \
                 with this request_id to follow it",
                super::STATUS_TOOL
            ),
            false,
        ),
        Phase::Running => (
            format!(
                "action {id} is still running; call {} with this request_id to follow it",
                super::STATUS_TOOL
            ),
            false,
        ),
    };
    result(text, is_error, &doc)
}

/// The result of a call refused before its action had a phase (e.g. a duplicate request id).
pub(crate) fn tool_error(id: RequestId, api: &ApiError) -> CallToolResult {
    let mut doc = status_doc(id, &Phase::Running);
    doc.status = "failed";
    doc.error = Some(api.clone());
    result(error_summary(api), true, &doc)
}

fn result(text: String, is_error: bool, doc: &StatusDoc) -> CallToolResult {
    let content = vec![ContentBlock::text(text)];
    let mut r = if is_error {
        CallToolResult::error(content)
    } else {
        CallToolResult::success(content)
    };
    r.structured_content = serde_json::to_value(doc).ok();
    r
}

/// `diag.echo ran on … and exited with code 0 in 12 ms (grant g-1, 300 s, revoked)`, then the
/// output.
fn outcome_summary(outcome: &ActionOutcome) -> String {
    let job = &outcome.job;
    let revoked = if outcome.grant.revoked {
        "revoked"
    } else {
        "NOT revoked: it expires by itself at its not_after"
    };
    let mut text = format!(
        "{} ({}) {} in {} ms; grant {} for {} s, {revoked}; audit record {}#{}",
        outcome.action,
        outcome.correlation_id,
        job.status,
        job.duration.as_millis(),
        outcome.grant.id,
        outcome.grant.ttl_seconds,
        outcome.audit.stream_id,
        outcome.audit.sequence,
    );
    for (name, stream, truncated) in [
        ("stdout", &job.stdout, job.stdout_truncated),
        ("stderr", &job.stderr, job.stderr_truncated),
    ] {
        if !stream.is_empty() {
            let cut = if truncated { " (truncated)" } else { "" };
            text.push_str(&format!("\n{name}{cut}:\n{stream}"));
        }
    }
    text
}

/// `denied: …` with the reasons, one per line.
fn error_summary(api: &ApiError) -> String {
    // Gateway errors already start with their kind ("denied: …"); do not say it twice.
    let mut text = if api.message.starts_with(&format!("{}:", api.kind)) {
        api.message.clone()
    } else {
        format!("{}: {}", api.kind, api.message)
    };
    if let Some(reasons) = &api.reasons
        && !reasons.is_empty()
    {
        text.push_str("\nreasons:\n- ");
        text.push_str(&reasons.join("\n- "));
    }
    text
}
