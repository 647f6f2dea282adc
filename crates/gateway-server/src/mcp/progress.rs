//! Following a tool call's action while the call is open: progress notifications for the
//! client, and cancellation when the client withdraws the call.
//!
//! MCP clients attach a `progressToken` to a request when they want `notifications/progress`
//! for it (the official SDKs do when given a progress callback; rmcp's client always does).
//! While the action runs or waits for a human, the client gets one notification at each phase
//! change and one every `mcp_progress_interval`, so a call that waits minutes for an approver
//! is visibly alive; a call that ends before either gets none (a notification first would make
//! the answer an event stream). A `notifications/cancelled` for the call cancels the action itself
//! (`Gateway::execute_until`): before the grant nothing runs, after it the job is stopped, and
//! revocation and the audit record still happen. In a session rmcp delivers the notification;
//! without one the endpoint's middleware does (`super::cancel`).

use crate::tracker::Phase;
use gateway_core::CancellationToken;
use rmcp::RoleServer;
use rmcp::model::ProgressNotificationParam;
use rmcp::service::RequestContext;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

/// Waits up to `wait` for the action's outcome (see the module docs); returns the phase then.
pub(super) async fn follow(
    rx: &mut watch::Receiver<Phase>,
    wait: Duration,
    interval: Duration,
    context: &RequestContext<RoleServer>,
    cancel: &CancellationToken,
) -> Phase {
    let token = context.meta.get_progress_token();
    let deadline = Instant::now() + wait;
    // A zero interval would spin; ten notifications a second are the most anyone needs. The
    // first tick is one interval away: awaiting an immediate one still waits for the timer
    // wheel's next millisecond, which was most of a fast call's cost (`benches/fronts.rs`).
    let interval = interval.max(Duration::from_millis(100));
    let mut ticker = tokio::time::interval_at(Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut sent = 0u32;
    // Nothing is said about a call that ends at once: a notification before the result turns
    // the HTTP answer into an event stream, which costs a fast call more than the call itself.
    let mut due = false;
    loop {
        let phase = rx.borrow_and_update().clone();
        if matches!(phase, Phase::Done(_)) {
            return phase;
        }
        if let (true, Some(token)) = (std::mem::take(&mut due), &token) {
            sent += 1;
            let note = ProgressNotificationParam::new(token.clone(), f64::from(sent))
                .with_message(describe(&phase));
            if let Err(e) = context.peer.notify_progress(note).await {
                tracing::debug!(error = %e, "progress notification not delivered");
            }
        }
        tokio::select! {
            changed = rx.changed() => {
                if changed.is_err() {
                    // The tracker dropped the entry; it will not change any more.
                    return rx.borrow().clone();
                }
                // A new phase (e.g. now waiting for a human) is worth telling at once.
                due = true;
            }
            _ = ticker.tick() => due = true,
            () = context.ct.cancelled(), if !cancel.is_cancelled() => {
                tracing::info!("the client cancelled the call: cancelling its action");
                cancel.cancel();
            }
            () = tokio::time::sleep_until(deadline) => return phase,
        }
    }
}

fn describe(phase: &Phase) -> String {
    match phase {
        Phase::PendingApproval { deadline } => {
            format!("waiting for human approval (deadline {deadline})")
        }
        Phase::Running => "running".to_owned(),
        Phase::Done(_) => "done".to_owned(),
    }
}
