//! Fault injection for the test doubles.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// What a double does instead of (or before) its normal work on a given call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Return the backend's `Unavailable` error.
    Error,
    /// Never answer.
    Hang,
    /// Panic.
    Panic,
    /// Wait, then answer normally.
    Delay(Duration),
}

#[derive(Debug, Default)]
struct State {
    calls: u64,
    schedule: BTreeMap<u64, Fault>,
    always: Option<Fault>,
}

/// A schedule of faults by call number (0-based), shared between clones.
#[derive(Debug, Clone, Default)]
pub struct FaultPlan {
    state: Arc<Mutex<State>>,
}

impl FaultPlan {
    /// No faults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Injects `fault` on call number `n` (0-based).
    pub fn on_call(self, n: u64, fault: Fault) -> Self {
        self.lock().schedule.insert(n, fault);
        self
    }

    /// Injects `fault` on every call (until [`FaultPlan::clear`]).
    pub fn always(self, fault: Fault) -> Self {
        self.lock().always = Some(fault);
        self
    }

    /// Removes all faults.
    pub fn clear(&self) {
        let mut s = self.lock();
        s.schedule.clear();
        s.always = None;
    }

    /// How many calls were made.
    pub fn calls(&self) -> u64 {
        self.lock().calls
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a call and applies its fault: `Err(())` means "fail with an error now".
    /// Panics or never returns for [`Fault::Panic`] and [`Fault::Hang`], by design.
    pub async fn enter(&self) -> Result<(), ()> {
        let fault = {
            let mut s = self.lock();
            let n = s.calls;
            s.calls += 1;
            s.schedule.remove(&n).or(s.always)
        };
        match fault {
            None => Ok(()),
            Some(Fault::Error) => Err(()),
            Some(Fault::Hang) => {
                std::future::pending::<()>().await;
                Ok(())
            }
            Some(Fault::Panic) => panic!("injected fault: panic"),
            Some(Fault::Delay(d)) => {
                tokio::time::sleep(d).await;
                Ok(())
            }
        }
    }
}
