//! The gateway's periodic tasks ([`Gateway::spawn_recovery`](crate::Gateway::spawn_recovery),
//! [`Gateway::spawn_lock_watch`](crate::Gateway::spawn_lock_watch)): one loop, a tick that
//! never bursts to catch up, and a handle that stops the task when dropped.

use std::future::Future;
use std::time::Duration;
use tracing::Instrument;

/// The shortest period a task runs at.
const MIN_PERIOD: Duration = Duration::from_millis(100);

/// A periodic task of the gateway; dropping it stops the task.
#[derive(Debug)]
pub struct BackgroundTask(tokio::task::JoinHandle<()>);

impl Drop for BackgroundTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs `tick` now and then every `every` (at least [`MIN_PERIOD`]) on a task of its own, in
/// `span`. A tick that overruns delays the next one instead of bunching them.
pub(crate) fn every<F, Fut>(every: Duration, span: tracing::Span, mut tick: F) -> BackgroundTask
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let task = tokio::spawn(
        async move {
            let mut interval = tokio::time::interval(every.max(MIN_PERIOD));
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                tick().await;
            }
        }
        .instrument(span),
    );
    BackgroundTask(task)
}
