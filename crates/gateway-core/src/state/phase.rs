//! Where an action is in its lifecycle, and which moves between phases are legal.

use serde::{Deserialize, Serialize};

/// The phase of one action, as the state store holds it.
///
/// ```text
/// received ──► awaiting_approval ──► approved ──► running ──► completed
///    │                │                 │            │
///    └───────────────►┴────────────────►┴───────────►┴──► failed | abandoned
/// received ──────────────────────────────────────► running
/// ```
///
/// The policy's decision is in the audit trail (`decided`); the store does not spend a commit
/// on it: an allowed action moves from `received` straight to `awaiting_approval` or
/// `running`, a denied one to `failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Phase {
    /// Authenticated and claimed: its id is taken for its agent.
    Received,
    /// Waiting for human approval (the record holds the ticket).
    AwaitingApproval,
    /// Approved; waiting to be granted and run.
    Approved,
    /// Granted and running (the credential may have left the gateway).
    Running,
    /// It ran; the record holds the outcome.
    Completed,
    /// It was refused, or failed; the record holds why.
    Failed,
    /// The replica that held it stopped; its grant was revoked by a recovery sweep.
    Abandoned,
}

impl Phase {
    /// Every phase, in lifecycle order.
    pub const ALL: [Phase; 7] = [
        Self::Received,
        Self::AwaitingApproval,
        Self::Approved,
        Self::Running,
        Self::Completed,
        Self::Failed,
        Self::Abandoned,
    ];

    /// The stable name (`received`, `awaiting_approval`, …), as stored and served.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Received => "received",
            Self::AwaitingApproval => "awaiting_approval",
            Self::Approved => "approved",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Abandoned => "abandoned",
        }
    }

    /// The phase named `name` ([`Phase::as_str`]).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == name)
    }

    /// Whether nothing follows this phase.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Abandoned)
    }

    /// Whether an action in this phase may move to `next`.
    pub fn may_become(self, next: Phase) -> bool {
        use Phase::*;
        match (self, next) {
            (Received, AwaitingApproval | Running) => true,
            (AwaitingApproval, Approved) => true,
            (Approved, Running) => true,
            (Running, Completed) => true,
            (from, Failed | Abandoned) => !from.is_terminal(),
            _ => false,
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_match_serde() {
        for phase in Phase::ALL {
            assert_eq!(Phase::parse(phase.as_str()), Some(phase));
            let json = serde_json::to_value(phase).unwrap_or_default();
            assert_eq!(json, serde_json::json!(phase.as_str()));
        }
        assert_eq!(Phase::parse("decided"), None);
    }

    #[test]
    fn terminal_phases_have_no_successor_and_nothing_goes_back() {
        for from in Phase::ALL {
            for to in Phase::ALL {
                if from.is_terminal() {
                    assert!(!from.may_become(to), "{from} -> {to}");
                }
                if from.may_become(to) {
                    assert!(to > from, "{from} -> {to} goes backwards");
                }
            }
        }
        assert!(Phase::Received.may_become(Phase::Running));
        assert!(!Phase::Received.may_become(Phase::Completed));
        assert!(!Phase::AwaitingApproval.may_become(Phase::Running));
    }
}
