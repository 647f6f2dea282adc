//! Checkpoint witnesses: copies of every signed checkpoint kept outside the log's trust domain.
//!
//! The log's own host can truncate its tail, delete its checkpoints, or (holding the signing
//! key) rewrite and re-sign its whole history. A witness keeps what the log said at each
//! checkpoint somewhere that host cannot rewrite: an append-only file in another directory
//! ([`FileWitness`], the embedded default; put it on another mount or host for real separation),
//! or a separate PostgreSQL database reached through an INSERT-only role (`PostgresWitness`,
//! feature `postgres`). The writer sends
//! every checkpoint to its witnesses and stops accepting appends (fails closed) while fewer
//! than the configured number have acknowledged the newest one; verification
//! ([`check_witnessed`]) then fails when the log is shorter than the newest witnessed
//! checkpoint, lacks a witnessed checkpoint, or holds another head where one was witnessed.
//!
//! Every backend runs the named cases of [`conformance`].

use crate::checkpoint::Checkpoint;
use crate::store::AuditStore;
use async_trait::async_trait;
use gateway_core::audit::AuditError;
use std::collections::HashMap;
use std::fmt;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// What went wrong, whatever the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WitnessErrorKind {
    /// The witness cannot be reached or cannot store now; retrying may succeed.
    Unavailable,
    /// The witness refuses this checkpoint: its head goes backwards, or another head was
    /// already witnessed at its sequence. Retrying the same checkpoint fails the same way.
    Rejected,
    /// What the witness holds cannot be read back (corrupt or foreign data).
    Corrupt,
}

/// A witness failure, with its source.
#[derive(Debug, thiserror::Error)]
pub enum WitnessError {
    /// See [`WitnessErrorKind::Unavailable`].
    #[error("witness {witness} is unavailable: {message}")]
    Unavailable {
        /// The witness's name.
        witness: String,
        /// What failed.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// See [`WitnessErrorKind::Rejected`].
    #[error("witness {witness} refused the checkpoint: {message}")]
    Rejected {
        /// The witness's name.
        witness: String,
        /// Why.
        message: String,
    },
    /// See [`WitnessErrorKind::Corrupt`].
    #[error("witness {witness} holds unreadable data: {message}")]
    Corrupt {
        /// The witness's name.
        witness: String,
        /// What could not be read.
        message: String,
    },
}

impl WitnessError {
    /// The backend-neutral kind.
    pub fn kind(&self) -> WitnessErrorKind {
        match self {
            Self::Unavailable { .. } => WitnessErrorKind::Unavailable,
            Self::Rejected { .. } => WitnessErrorKind::Rejected,
            Self::Corrupt { .. } => WitnessErrorKind::Corrupt,
        }
    }

    pub(crate) fn unavailable(
        witness: &str,
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Unavailable {
            witness: witness.to_owned(),
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }

    pub(crate) fn rejected(witness: &str, message: impl Into<String>) -> Self {
        Self::Rejected {
            witness: witness.to_owned(),
            message: message.into(),
        }
    }

    pub(crate) fn corrupt(witness: &str, message: impl Into<String>) -> Self {
        Self::Corrupt {
            witness: witness.to_owned(),
            message: message.into(),
        }
    }
}

impl From<WitnessError> for AuditError {
    fn from(e: WitnessError) -> Self {
        let message = e.to_string();
        match e.kind() {
            WitnessErrorKind::Unavailable => AuditError::Unavailable {
                message,
                source: Some(Box::new(e)),
            },
            WitnessErrorKind::Rejected => AuditError::Conflict { message },
            WitnessErrorKind::Corrupt => AuditError::internal("audit witness", e),
        }
    }
}

/// Somewhere outside the log's trust domain that keeps every checkpoint it acknowledged.
///
/// Implementations must:
/// * store a checkpoint durably before [`witness`](Self::witness) returns `Ok`;
/// * accept the same checkpoint again (a retry) with `Ok`, without storing it twice;
/// * refuse ([`WitnessError::Rejected`]) a checkpoint of a stream whose sequence is below the
///   newest one witnessed for it, or at a witnessed sequence with another head hash: the head
///   never goes backwards and never forks;
/// * never change or remove what they stored (append-only), and return it from
///   [`checkpoints`](Self::checkpoints) in sequence order.
#[async_trait]
pub trait CheckpointWitness: Send + Sync + fmt::Debug + 'static {
    /// A name for messages (e.g. the file path or database), without secrets.
    fn name(&self) -> &str;

    /// Stores `checkpoint` durably; see the trait docs for what must be refused.
    async fn witness(&self, checkpoint: &Checkpoint) -> Result<(), WitnessError>;

    /// Every checkpoint witnessed for `stream_id`, in sequence order.
    async fn checkpoints(&self, stream_id: &str) -> Result<Vec<Checkpoint>, WitnessError>;
}

/// How the writer uses its witnesses: all of them get every checkpoint, and at least
/// `required` must acknowledge it before appends go on.
#[derive(Debug, Clone)]
pub struct WitnessPolicy {
    /// The witnesses.
    pub witnesses: Vec<Arc<dyn CheckpointWitness>>,
    /// How many must acknowledge each checkpoint (1..=witnesses.len()).
    pub required: usize,
    /// How long one witness may take to answer before it counts as unavailable.
    pub timeout: std::time::Duration,
}

/// The newest witnessed checkpoint of each stream, and whether a new one may follow it.
#[derive(Debug, Default)]
struct Heads(HashMap<String, (u64, String)>);

impl Heads {
    /// `Ok(true)`: new, store it; `Ok(false)`: already witnessed (a retry); `Err`: refused.
    fn admit(&self, name: &str, cp: &Checkpoint) -> Result<bool, WitnessError> {
        match self.0.get(&cp.stream_id) {
            None => Ok(true),
            Some((seq, hash)) if cp.sequence == *seq && cp.head_hash == *hash => Ok(false),
            Some((seq, _)) if cp.sequence == *seq => Err(WitnessError::rejected(
                name,
                format!(
                    "stream {} already has another head witnessed at sequence {seq}",
                    cp.stream_id
                ),
            )),
            Some((seq, _)) if cp.sequence < *seq => Err(WitnessError::rejected(
                name,
                format!(
                    "stream {} head would go backwards: {} after {seq}",
                    cp.stream_id, cp.sequence
                ),
            )),
            Some(_) => Ok(true),
        }
    }

    fn record(&mut self, cp: &Checkpoint) {
        self.0
            .insert(cp.stream_id.clone(), (cp.sequence, cp.head_hash.clone()));
    }
}

/// An append-only JSON-lines file of checkpoints in a directory of its own (the embedded
/// default witness): one line per checkpoint, as [`Checkpoint`] serialises (see
/// `docs/audit-format.md`), each written and fsynced before it is acknowledged. Keep the
/// directory apart from the log (another mount, owner or host): it is only as independent as
/// its location.
pub struct FileWitness {
    name: String,
    path: PathBuf,
    inner: Arc<Mutex<FileInner>>,
}

struct FileInner {
    file: std::fs::File,
    heads: Heads,
}

impl fmt::Debug for FileWitness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileWitness")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// The file a [`FileWitness`] keeps in its directory.
pub const WITNESS_FILE: &str = "checkpoints.jsonl";

impl FileWitness {
    /// Opens (creating it and its directory if needed) the witness file in `dir`.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, WitnessError> {
        let dir = dir.as_ref();
        let name = dir.display().to_string();
        std::fs::create_dir_all(dir)
            .map_err(|e| WitnessError::unavailable(&name, "creating the witness directory", e))?;
        let path = dir.join(WITNESS_FILE);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&path)
            .map_err(|e| WitnessError::unavailable(&name, "opening the witness file", e))?;
        let mut heads = Heads::default();
        for cp in read_lines(&name, &path)? {
            heads.record(&cp);
        }
        Ok(Self {
            name,
            path,
            inner: Arc::new(Mutex::new(FileInner { file, heads })),
        })
    }

    /// Reads the witnessed checkpoints of a witness file without opening it for writing (what
    /// a verifier does).
    pub fn read(dir_or_file: impl AsRef<Path>) -> Result<Vec<Checkpoint>, WitnessError> {
        let p = dir_or_file.as_ref();
        let path = if p.is_dir() {
            p.join(WITNESS_FILE)
        } else {
            p.to_owned()
        };
        read_lines(&path.display().to_string(), &path)
    }
}

fn read_lines(name: &str, path: &Path) -> Result<Vec<Checkpoint>, WitnessError> {
    let file = std::fs::File::open(path)
        .map_err(|e| WitnessError::unavailable(name, "reading the witness file", e))?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line =
            line.map_err(|e| WitnessError::unavailable(name, "reading the witness file", e))?;
        if line.is_empty() {
            continue;
        }
        let cp: Checkpoint = serde_json::from_str(&line)
            .map_err(|e| WitnessError::corrupt(name, format!("line {}: {e}", i + 1)))?;
        out.push(cp);
    }
    Ok(out)
}

#[async_trait]
impl CheckpointWitness for FileWitness {
    fn name(&self) -> &str {
        &self.name
    }

    async fn witness(&self, checkpoint: &Checkpoint) -> Result<(), WitnessError> {
        self.witness_with(checkpoint, None).await
    }

    async fn checkpoints(&self, stream_id: &str) -> Result<Vec<Checkpoint>, WitnessError> {
        let (name, path) = (self.name.clone(), self.path.clone());
        let all = tokio::task::spawn_blocking(move || read_lines(&name, &path))
            .await
            .map_err(|e| WitnessError::unavailable(&self.name, "witness task failed", e))??;
        let mut mine: Vec<Checkpoint> = all
            .into_iter()
            .filter(|c| c.stream_id == stream_id)
            .collect();
        mine.sort_by_key(|c| c.sequence);
        Ok(mine)
    }
}

impl FileWitness {
    /// Whether `checkpoint` would be stored (`Ok(false)`: already witnessed).
    #[cfg_attr(not(feature = "tsa"), allow(dead_code))]
    pub(crate) fn admits(&self, checkpoint: &Checkpoint) -> Result<bool, WitnessError> {
        let inner = self
            .inner
            .lock()
            .map_err(|_| WitnessError::corrupt(&self.name, "an earlier write panicked"))?;
        inner.heads.admit(&self.name, checkpoint)
    }

    /// Stores `checkpoint`, with a time-stamp token (base64 DER) in its line when given.
    pub(crate) async fn witness_with(
        &self,
        checkpoint: &Checkpoint,
        tsa_token: Option<String>,
    ) -> Result<(), WitnessError> {
        let inner = Arc::clone(&self.inner);
        let name = self.name.clone();
        let cp = checkpoint.clone();
        let task = tokio::task::spawn_blocking(move || {
            // A poisoned lock means a write panicked half-way: the file may end in a partial
            // line, so refuse to go on rather than guess.
            let mut inner = inner
                .lock()
                .map_err(|_| WitnessError::corrupt(&name, "an earlier write panicked"))?;
            if !inner.heads.admit(&name, &cp)? {
                return Ok(());
            }
            let mut value = serde_json::to_value(&cp)
                .map_err(|e| WitnessError::corrupt(&name, format!("serialising: {e}")))?;
            if let (Some(token), Some(map)) = (tsa_token, value.as_object_mut()) {
                map.insert("tsa_token".into(), serde_json::Value::String(token));
            }
            let mut line = serde_json::to_vec(&value)
                .map_err(|e| WitnessError::corrupt(&name, format!("serialising: {e}")))?;
            line.push(b'\n');
            inner
                .file
                .write_all(&line)
                .and_then(|()| inner.file.sync_data())
                .map_err(|e| WitnessError::unavailable(&name, "writing the witness file", e))?;
            inner.heads.record(&cp);
            Ok(())
        });
        task.await
            .map_err(|e| WitnessError::unavailable(&self.name, "witness task failed", e))?
    }
}

/// What the witnesses say about a stream that [`verify_stream`](crate::verify_stream) found
/// intact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitnessReport {
    /// Witnessed checkpoints compared with the log.
    pub witnessed: u64,
    /// The newest witnessed sequence, if any.
    pub newest_witnessed: Option<u64>,
    /// Records after the newest witnessed checkpoint: protected by the chain and the log's own
    /// signed checkpoints only (the window an attacker on the log's host can still rewrite).
    pub unwitnessed_records: u64,
    /// The first disagreement between the log and the witness, if any.
    pub fault: Option<String>,
}

/// Compares a stream's log with the checkpoints a witness holds for it: every witnessed
/// checkpoint must be in the log with the same head hash (the log's checkpoints are checked
/// against its chain by [`verify_stream`](crate::verify_stream)), and the log must reach the
/// newest. Witnessed checkpoints must be signed by a trusted key (when `trusted` is not empty):
/// the witness is not trusted either. `head` is the log's last sequence.
pub async fn check_witnessed<S: AuditStore + ?Sized>(
    store: &S,
    stream_id: &str,
    head: Option<u64>,
    witnessed: &[Checkpoint],
    trusted: &[ed25519_dalek::VerifyingKey],
) -> Result<WitnessReport, AuditError> {
    let mut report = WitnessReport {
        witnessed: 0,
        newest_witnessed: None,
        unwitnessed_records: head.map(|h| h.saturating_add(1)).unwrap_or(0),
        fault: None,
    };
    let mut log = HashMap::new();
    let mut after = None;
    loop {
        let page = store.read_checkpoints(stream_id, after, 5000).await?;
        let n = page.len();
        for c in page {
            if let Ok(seq) = u64::try_from(c.sequence) {
                after = Some(seq);
                log.insert(seq, c.head_hash);
            }
        }
        if n < 5000 {
            break;
        }
    }
    for cp in witnessed.iter().filter(|c| c.stream_id == stream_id) {
        if !trusted.is_empty() {
            let key = trusted
                .iter()
                .find(|k| cp.key_id.eq_ignore_ascii_case(&hex::encode(k.as_bytes())));
            let checked = match key {
                Some(key) => cp.verify_signature(key),
                None => Err(format!(
                    "witnessed checkpoint at sequence {} was signed by key {}, which is not trusted",
                    cp.sequence, cp.key_id
                )),
            };
            if let Err(e) = checked {
                report.fault = Some(e);
                return Ok(report);
            }
        }
        report.witnessed += 1;
        report.newest_witnessed = Some(
            report
                .newest_witnessed
                .map_or(cp.sequence, |n| n.max(cp.sequence)),
        );
        if head.is_none_or(|h| cp.sequence > h) {
            report.fault = Some(format!(
                "the log ends at {} but a checkpoint at sequence {} was witnessed: records were \
                 removed from its tail",
                head.map_or("nothing".to_owned(), |h| h.to_string()),
                cp.sequence
            ));
            return Ok(report);
        }
        match log.get(&cp.sequence) {
            None => {
                report.fault = Some(format!(
                    "the witnessed checkpoint at sequence {} is missing from the log",
                    cp.sequence
                ));
                return Ok(report);
            }
            Some(hash) if *hash != cp.head_hash => {
                report.fault = Some(format!(
                    "at sequence {} the log's checkpoint names head {hash}, the witnessed one {}: \
                     the log was rewritten",
                    cp.sequence, cp.head_hash
                ));
                return Ok(report);
            }
            Some(_) => {}
        }
    }
    if let (Some(h), Some(w)) = (head, report.newest_witnessed) {
        report.unwitnessed_records = h - w;
    }
    Ok(report)
}

/// The named cases every [`CheckpointWitness`] backend runs (as gateway-core's `conformance`
/// modules do for its traits). Each takes a fresh, empty witness.
pub mod conformance {
    use super::*;
    use crate::signer::{CheckpointSigner, SoftwareSigner};

    fn hash(n: u8) -> String {
        format!("{n:02x}").repeat(32)
    }

    fn check(ok: bool, case: &str, what: impl fmt::Display) -> Result<(), String> {
        if ok {
            Ok(())
        } else {
            Err(format!("{case}: {what}"))
        }
    }

    /// Witnessed checkpoints come back, per stream, in order, and a retry is stored once.
    pub async fn stores_and_returns_in_order(w: &dyn CheckpointWitness) -> Result<(), String> {
        let case = "stores_and_returns_in_order";
        let signer = SoftwareSigner::generate();
        let a4 = signer.sign("a", 4, &hash(4)).map_err(|e| e.to_string())?;
        let a9 = signer.sign("a", 9, &hash(9)).map_err(|e| e.to_string())?;
        let b2 = signer.sign("b", 2, &hash(2)).map_err(|e| e.to_string())?;
        for cp in [&a4, &b2, &a9, &a9] {
            w.witness(cp).await.map_err(|e| format!("{case}: {e}"))?;
        }
        let got = w
            .checkpoints("a")
            .await
            .map_err(|e| format!("{case}: {e}"))?;
        check(got == vec![a4, a9], case, format!("stream a: {got:?}"))?;
        let got = w
            .checkpoints("b")
            .await
            .map_err(|e| format!("{case}: {e}"))?;
        check(got == vec![b2], case, format!("stream b: {got:?}"))?;
        let got = w
            .checkpoints("c")
            .await
            .map_err(|e| format!("{case}: {e}"))?;
        check(got.is_empty(), case, "an unknown stream has checkpoints")
    }

    /// A head that goes backwards, or forks at a witnessed sequence, is refused and not stored.
    pub async fn refuses_a_head_that_goes_backwards(
        w: &dyn CheckpointWitness,
    ) -> Result<(), String> {
        let case = "refuses_a_head_that_goes_backwards";
        let signer = SoftwareSigner::generate();
        let s = |n: u64, h: u8| signer.sign("s", n, &hash(h)).map_err(|e| e.to_string());
        w.witness(&s(10, 10)?)
            .await
            .map_err(|e| format!("{case}: {e}"))?;
        for (bad, what) in [(s(5, 5)?, "backwards"), (s(10, 11)?, "a fork")] {
            let err = w.witness(&bad).await;
            check(
                matches!(&err, Err(e) if e.kind() == WitnessErrorKind::Rejected),
                case,
                format!("{what} accepted: {err:?}"),
            )?;
        }
        let got = w
            .checkpoints("s")
            .await
            .map_err(|e| format!("{case}: {e}"))?;
        check(
            got.len() == 1,
            case,
            format!("refused ones stored: {got:?}"),
        )
    }

    /// Runs every case on fresh witnesses from `make`.
    pub async fn run_all<W, F, Fut>(make: F) -> Result<(), String>
    where
        W: CheckpointWitness,
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = W>,
    {
        stores_and_returns_in_order(&make().await).await?;
        refuses_a_head_that_goes_backwards(&make().await).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn file_witness_passes_the_conformance_suite() {
        let dirs: Mutex<Vec<tempfile::TempDir>> = Mutex::new(Vec::new());
        conformance::run_all(|| {
            let dir = tempfile::tempdir().unwrap();
            let w = FileWitness::open(dir.path()).unwrap();
            dirs.lock().unwrap().push(dir);
            async move { w }
        })
        .await
        .unwrap();
    }

    /// Reopened, the file witness still knows its heads (refuses to go backwards).
    #[tokio::test]
    async fn file_witness_remembers_its_heads() {
        let dir = tempfile::tempdir().unwrap();
        use crate::CheckpointSigner as _;
        let signer = crate::SoftwareSigner::generate();
        FileWitness::open(dir.path())
            .unwrap()
            .witness(&signer.sign("s", 8, &"aa".repeat(32)).unwrap())
            .await
            .unwrap();
        let again = FileWitness::open(dir.path()).unwrap();
        let err = again
            .witness(&signer.sign("s", 3, &"bb".repeat(32)).unwrap())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), WitnessErrorKind::Rejected);
        assert_eq!(FileWitness::read(dir.path()).unwrap().len(), 1);
    }
}
