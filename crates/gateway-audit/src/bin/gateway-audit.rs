//! `gateway-audit`: verify and export agent-gateway audit logs (SQLite or PostgreSQL).
//!
//! ```text
//! gateway-audit verify --db <url> [--stream <id>] [--pubkey <file>] [--max-checkpoint-gap N]
//! gateway-audit export --db <url> --jsonl [--stream <id>] [--checkpoints]
//! gateway-audit keygen --out <secret-key-file>
//! ```
//!
//! `--db` takes `sqlite://<path>` (or a plain file path) or `postgres://…`. Exit status: 0 when
//! every chain verifies, 1 when a fault is found, 2 on a usage or database error.

use clap::{Parser, Subcommand};
use gateway_audit::checkpoint::{Checkpoint, parse_public_key};
use gateway_audit::{
    AuditStore, CheckpointSigner, PostgresStore, SqliteStore, VerifyOptions, verify_all,
    verify_stream,
};
use gateway_core::audit::AuditError;
use std::path::PathBuf;
use std::process::ExitCode;
use tokio::io::{AsyncWriteExt, BufWriter};

#[derive(Parser)]
#[command(
    name = "gateway-audit",
    about = "Verify and export agent-gateway audit logs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Recompute every chain, check its checkpoints, report the first fault per stream.
    Verify {
        /// Database URL: sqlite://<path>, a file path, or postgres://…
        #[arg(long)]
        db: String,
        /// Only this stream (default: every stream).
        #[arg(long)]
        stream: Option<String>,
        /// File holding the trusted checkpoint public key (64 hex digits).
        #[arg(long)]
        pubkey: Option<PathBuf>,
        /// Fail when more than N records are not covered by a checkpoint.
        #[arg(long)]
        max_checkpoint_gap: Option<u64>,
    },
    /// Write records (or checkpoints) as JSON lines to stdout, in sequence order.
    Export {
        /// Database URL.
        #[arg(long)]
        db: String,
        /// JSON Lines output (the only format).
        #[arg(long)]
        jsonl: bool,
        /// Only this stream (default: every stream).
        #[arg(long)]
        stream: Option<String>,
        /// Export the signed checkpoints instead of the records.
        #[arg(long)]
        checkpoints: bool,
    },
    /// Generate a checkpoint signing key: the secret goes to --out (mode 0600), the public key
    /// to stdout.
    Keygen {
        /// Where to write the secret key (hex). Must not exist.
        #[arg(long)]
        out: PathBuf,
    },
}

enum Store {
    Sqlite(SqliteStore),
    Postgres(PostgresStore),
}

impl Store {
    async fn open(url: &str) -> Result<Self, AuditError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Self::Postgres(PostgresStore::connect(url).await?));
        }
        let path = url.strip_prefix("sqlite://").unwrap_or(url);
        let path = path.split('?').next().unwrap_or(path);
        if !std::path::Path::new(path).exists() {
            return Err(AuditError::NotFound {
                message: format!("no SQLite database at {path}"),
            });
        }
        Ok(Self::Sqlite(SqliteStore::open_read_only(path).await?))
    }

    fn as_dyn(&self) -> &dyn AuditStore {
        match self {
            Self::Sqlite(s) => s,
            Self::Postgres(s) => s,
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("gateway-audit: {e}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> Result<bool, AuditError> {
    match cli.command {
        Command::Verify {
            db,
            stream,
            pubkey,
            max_checkpoint_gap,
        } => {
            let public_key = match pubkey {
                Some(path) => {
                    let text = std::fs::read_to_string(&path).map_err(|e| {
                        AuditError::invalid_input(format!("reading {}: {e}", path.display()))
                    })?;
                    Some(parse_public_key(&text)?)
                }
                None => None,
            };
            let options = VerifyOptions {
                public_key,
                max_checkpoint_gap,
                ..VerifyOptions::default()
            };
            let store = Store::open(&db).await?;
            let reports = match &stream {
                Some(s) => vec![verify_stream(store.as_dyn(), s, &options).await?],
                None => verify_all(store.as_dyn(), &options).await?,
            };
            if reports.is_empty() {
                eprintln!("gateway-audit: no audit streams found");
                return Ok(false);
            }
            let mut ok = true;
            for r in &reports {
                match &r.fault {
                    None => println!(
                        "OK     {}: {} records, head {}, {} checkpoints verified{}",
                        r.stream_id,
                        r.records_checked,
                        r.head.as_ref().map(|h| h.0).unwrap_or(0),
                        r.checkpoints_checked,
                        if options.public_key.is_some() {
                            ""
                        } else {
                            " (no --pubkey: signatures not checked)"
                        },
                    ),
                    Some(f) => {
                        ok = false;
                        println!(
                            "FAILED {}: {} at sequence {}: {}",
                            r.stream_id, f.kind, f.sequence, f.detail
                        );
                    }
                }
            }
            Ok(ok)
        }
        Command::Export {
            db,
            jsonl,
            stream,
            checkpoints,
        } => {
            if !jsonl {
                return Err(AuditError::invalid_input(
                    "only --jsonl export is supported",
                ));
            }
            let store = Store::open(&db).await?;
            let store = store.as_dyn();
            let streams = match stream {
                Some(s) => vec![s],
                None => store.streams().await?,
            };
            let mut out = BufWriter::new(tokio::io::stdout());
            for s in &streams {
                export_stream(store, s, checkpoints, &mut out).await?;
            }
            out.flush()
                .await
                .map_err(|e| AuditError::unavailable("writing stdout", e))?;
            Ok(true)
        }
        Command::Keygen { out } => {
            let signer = CheckpointSigner::generate();
            write_secret(&out, &signer.secret_hex())?;
            println!("{}", signer.key_id());
            Ok(true)
        }
    }
}

const PAGE: usize = 5000;

async fn export_stream(
    store: &dyn AuditStore,
    stream: &str,
    checkpoints: bool,
    out: &mut BufWriter<tokio::io::Stdout>,
) -> Result<(), AuditError> {
    let mut after = None;
    loop {
        let lines: Vec<(i64, String)> = if checkpoints {
            store
                .read_checkpoints(stream, after, PAGE)
                .await?
                .iter()
                .map(|c| {
                    let cp = Checkpoint::from_stored(c).map_err(AuditError::invalid_input)?;
                    let json = serde_json::to_string(&cp)
                        .map_err(|e| AuditError::internal("serialising a checkpoint", e))?;
                    Ok((c.sequence, json))
                })
                .collect::<Result<_, AuditError>>()?
        } else {
            store
                .read_raw(stream, after, PAGE)
                .await?
                .iter()
                .map(|r| {
                    let record = r.to_record().map_err(|d| {
                        AuditError::invalid_input(format!("record {}: {d}", r.sequence))
                    })?;
                    let json = serde_json::to_string(&record)
                        .map_err(|e| AuditError::internal("serialising a record", e))?;
                    Ok((r.sequence, json))
                })
                .collect::<Result<_, AuditError>>()?
        };
        let n = lines.len();
        for (_, line) in &lines {
            out.write_all(line.as_bytes())
                .await
                .and(out.write_all(b"\n").await)
                .map_err(|e| AuditError::unavailable("writing stdout", e))?;
        }
        match lines.last().map(|l| u64::try_from(l.0)) {
            Some(Ok(last)) if n == PAGE => after = Some(last),
            _ => return Ok(()),
        }
    }
}

fn write_secret(path: &std::path::Path, secret: &str) -> Result<(), AuditError> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .map_err(|e| AuditError::invalid_input(format!("creating {}: {e}", path.display())))?;
    writeln!(file, "{secret}")
        .map_err(|e| AuditError::unavailable(format!("writing {}", path.display()), e))
}
