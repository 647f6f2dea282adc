//! The storage half of a sink: where chains and checkpoints live. One implementation per
//! database; the chain logic (sealing, group commit, verification) is shared. The rows it
//! stores are in module `record`, the SQL the two database stores share in module `sql`.

use crate::checkpoint::Checkpoint;
pub use crate::page::{RecordPage, RecordRef};
pub use crate::record::{SealedRecord, StoredCheckpoint, StoredRecord};
use async_trait::async_trait;
use gateway_core::audit::AuditError;

/// Durable storage for hash chains and their checkpoints.
///
/// Implementations must make [`append_batch`](Self::append_batch) atomic and durable (all or
/// nothing, on disk before it returns) and must reject a record whose `(stream_id, sequence)`
/// already exists with [`AuditError::Conflict`]: that is what keeps two writers from forking a
/// chain.
#[async_trait]
pub trait AuditStore: Send + Sync + 'static {
    /// The last record of `stream_id` as `(sequence, hash)`, or `None` for an empty stream.
    async fn head(&self, stream_id: &str) -> Result<Option<(u64, String)>, AuditError>;

    /// Appends `records` (sealed, consecutive; each row's `event` text is its `body`) and
    /// optionally a checkpoint in one durable transaction.
    async fn append_batch(
        &self,
        records: &[SealedRecord],
        checkpoint: Option<&Checkpoint>,
    ) -> Result<(), AuditError>;

    /// Up to `limit` rows of `stream_id` with sequence > `after` (all when `None`), in
    /// sequence order.
    async fn read_raw(
        &self,
        stream_id: &str,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<StoredRecord>, AuditError>;

    /// What [`read_raw`](Self::read_raw) returns, as one [`RecordPage`]: what verification
    /// reads. With `copies`, each row also carries its query columns
    /// ([`RecordRef::copies`]), which verification then checks against the hashed event.
    ///
    /// The default builds the page from `read_raw`, without copies; a store that can fill a
    /// page without a heap string per value (the SQLite and PostgreSQL stores) overrides it,
    /// and then `read_raw` is usually this page's [`to_records`](RecordPage::to_records).
    async fn read_page(
        &self,
        stream_id: &str,
        after: Option<u64>,
        limit: usize,
        copies: bool,
    ) -> Result<RecordPage, AuditError> {
        let _ = copies;
        let rows = self.read_raw(stream_id, after, limit).await?;
        Ok(RecordPage::from_records(stream_id, &rows))
    }

    /// Up to `limit` checkpoints of `stream_id` with sequence > `after`, in sequence order.
    async fn read_checkpoints(
        &self,
        stream_id: &str,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<StoredCheckpoint>, AuditError>;

    /// The newest checkpoint of `stream_id` (highest sequence), if any: what a sink reopening
    /// the stream compares its signing key with. The default pages through
    /// [`read_checkpoints`](Self::read_checkpoints); stores override it with one query.
    async fn latest_checkpoint(
        &self,
        stream_id: &str,
    ) -> Result<Option<StoredCheckpoint>, AuditError> {
        const PAGE: usize = 1000;
        let mut after = None;
        let mut latest = None;
        loop {
            let page = self.read_checkpoints(stream_id, after, PAGE).await?;
            let full = page.len() == PAGE;
            match page.into_iter().last() {
                Some(last) => {
                    after = u64::try_from(last.sequence).ok();
                    latest = Some(last);
                }
                None => return Ok(latest),
            }
            if !full || after.is_none() {
                return Ok(latest);
            }
        }
    }

    /// Every stream id with records or checkpoints, sorted.
    async fn streams(&self) -> Result<Vec<String>, AuditError>;
}
