//! `gateway-audit`: verify and export agent-gateway audit logs (SQLite or PostgreSQL).
//!
//! ```text
//! gateway-audit verify --db <url> (--pubkey <file>… | --no-signatures)
//!                      (--expect-stream <id>… | --stream <id> | --all-streams)
//!                      [--legacy-bodies] [--max-checkpoint-gap N] [--witness <dir>…]
//!                      [--tsa-ca <pem>]
//! gateway-audit export --db <url> --jsonl [--stream <id>] [--checkpoints]
//! gateway-audit keygen --out <secret-key-file>
//! gateway-audit keygen --pkcs11-module <lib.so> --token-label <t> --key-label <k>
//! ```
//!
//! `keygen --pkcs11-module` creates the key pair inside the token (the private key sensitive
//! and non-extractable) with the user PIN from `GATEWAY_PKCS11_PIN` (never a flag: argv is
//! visible to every user of the host). Both forms print the public key to trust.
//!
//! `--db` takes `sqlite://<path>` (or a plain file path) or `postgres://…`. Exit status: 0 when
//! every chain verifies, 1 when a fault is found, 2 on a usage or database error.
//!
//! `verify` trusts nothing it reads: the checkpoint keys come from the operator (`--pubkey`,
//! repeatable for a key rotation, never from the log's own directory), and without one it
//! refuses to run unless told `--no-signatures`, and then says plainly that no signature was
//! checked. The streams the log must hold come from the operator too (`--expect-stream`,
//! repeatable): one it holds but was not told to expect, or one it lacks, is a failure.
//! Rows in the formats of earlier versions are accepted only with `--legacy-bodies`.

use clap::{Parser, Subcommand};
use gateway_audit::TsaWitness;
use gateway_audit::checkpoint::{Checkpoint, parse_public_key};
use gateway_audit::tsa_verify::{TsaTrust, verify_token};
use gateway_audit::{
    AuditStore, CheckpointSigner, CheckpointWitness, FileWitness, PostgresStore, PostgresWitness,
    SoftwareSigner, SqliteStore, VerifyOptions, check_witnessed, verify_stream,
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
    Verify(VerifyArgs),
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
    /// Generate a checkpoint signing key, in a key file (--out, mode 0600) or inside a PKCS#11
    /// token (--pkcs11-module; PIN from GATEWAY_PKCS11_PIN); prints the public key.
    Keygen {
        /// Where to write the secret key (hex). Must not exist.
        #[arg(
            long,
            required_unless_present = "pkcs11_module",
            conflicts_with = "pkcs11_module"
        )]
        out: Option<PathBuf>,
        /// The token's PKCS#11 module, e.g. /usr/lib/softhsm/libsofthsm2.so.
        #[arg(long, requires_all = ["token_label", "key_label"])]
        pkcs11_module: Option<PathBuf>,
        /// The token's label.
        #[arg(long)]
        token_label: Option<String>,
        /// The new key pair's label (a rotation uses a new one).
        #[arg(long)]
        key_label: Option<String>,
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
        Command::Verify(args) => verify(args).await,
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
        Command::Keygen {
            out,
            pkcs11_module,
            token_label,
            key_label,
        } => {
            let key_id = match (out, pkcs11_module, token_label, key_label) {
                (Some(out), ..) => SoftwareSigner::create(&out)?.key_id(),
                (None, Some(module), Some(token), Some(key)) => {
                    let pin = std::env::var("GATEWAY_PKCS11_PIN").map_err(|_| {
                        AuditError::invalid_input("set GATEWAY_PKCS11_PIN to the token's user PIN")
                    })?;
                    let config = gateway_audit::Pkcs11Config::new(module, token, key, pin);
                    gateway_audit::Pkcs11Signer::generate(&config)?.key_id()
                }
                // clap requires --out or all three PKCS#11 flags.
                _ => {
                    return Err(AuditError::invalid_input(
                        "keygen needs --out or --pkcs11-module",
                    ));
                }
            };
            println!("{key_id}");
            Ok(true)
        }
    }
}

// `gateway-audit verify`'s arguments (its help text is the variant's and the fields').
#[derive(clap::Args)]
struct VerifyArgs {
    /// Database URL: sqlite://<path>, a file path, or postgres://…
    #[arg(long)]
    db: String,
    /// Only this stream; other streams in the log are not looked at.
    #[arg(long, conflicts_with_all = ["expect_stream", "all_streams"])]
    stream: Option<String>,
    /// A stream the log must hold (repeatable): every one must be there, and any other
    /// stream found is a failure.
    #[arg(long = "expect-stream", value_name = "ID")]
    expect_stream: Vec<String>,
    /// Verify whatever streams the log holds, without a list to check them against.
    #[arg(long, conflicts_with = "expect_stream")]
    all_streams: bool,
    /// File holding a trusted checkpoint public key (64 hex digits), kept apart from the
    /// log (repeatable: every checkpoint must be signed by one of them).
    #[arg(long, value_name = "FILE")]
    pubkey: Vec<PathBuf>,
    /// Check the chain without checking any checkpoint signature (says so in the output).
    #[arg(long, conflicts_with = "pubkey")]
    no_signatures: bool,
    /// Also accept rows written by earlier versions (event JSON instead of the canonical
    /// body; RFC 3339 `event_time` copies in a SQLite log not yet migrated).
    #[arg(long)]
    legacy_bodies: bool,
    /// Fail when more than N records are not covered by a checkpoint.
    #[arg(long)]
    max_checkpoint_gap: Option<u64>,
    /// A checkpoint witness to compare the log with (repeatable): a file witness's
    /// directory or `checkpoints.jsonl`, or a `postgres://` URL of a witness database
    /// (a read-only role will do). Fails when the log is shorter than the newest
    /// witnessed checkpoint, lacks a witnessed checkpoint, or has another head where one
    /// was witnessed; reports the records after the newest witnessed checkpoint.
    #[arg(long, value_name = "DIR|FILE|URL")]
    witness: Vec<String>,
    /// The certificates (PEM) of the time-stamping authorities, or their CAs, whose RFC
    /// 3161 tokens count: every token a --witness file holds must then stamp its
    /// checkpoint, be signed by such a TSA and chain to one of these. Without it, tokens
    /// are reported as not checked.
    #[arg(long, value_name = "PEM")]
    tsa_ca: Option<PathBuf>,
}

/// A checkpoint and its RFC 3161 reply (DER `TimeStampResp`).
type Stamped = (Checkpoint, Vec<u8>);

/// A witness the verifier reads.
enum Witnessed {
    /// A file witness: its checkpoints, read whole, and its directory if it holds RFC 3161
    /// tokens (a TSA witness's file).
    File {
        checkpoints: Vec<Checkpoint>,
        tsa_dir: Option<PathBuf>,
    },
    Postgres(PostgresWitness),
}

impl Witnessed {
    async fn open(spec: &str) -> Result<(String, Self), AuditError> {
        if spec.starts_with("postgres://") || spec.starts_with("postgresql://") {
            let w = PostgresWitness::connect(spec).await?;
            return Ok((w.name().to_owned(), Self::Postgres(w)));
        }
        let checkpoints = FileWitness::read(spec)?;
        let path = std::path::Path::new(spec);
        let (dir, file) = if path.is_dir() {
            (
                path.to_owned(),
                path.join(gateway_audit::witness::WITNESS_FILE),
            )
        } else {
            let dir = path.parent().unwrap_or(std::path::Path::new("."));
            (dir.to_owned(), path.to_owned())
        };
        let text = std::fs::read_to_string(&file)
            .map_err(|e| AuditError::unavailable(format!("reading {}", file.display()), e))?;
        let tsa_dir = text
            .lines()
            .any(|l| l.contains("\"tsa_token\""))
            .then_some(dir);
        Ok((
            spec.to_owned(),
            Self::File {
                checkpoints,
                tsa_dir,
            },
        ))
    }

    /// The RFC 3161 tokens of `stream`'s checkpoints, if this is a TSA witness's file.
    fn tsa_tokens(&self, stream: &str) -> Result<Option<Vec<Stamped>>, AuditError> {
        match self {
            Self::File {
                tsa_dir: Some(dir), ..
            } => Ok(Some(TsaWitness::tokens(dir, stream)?)),
            _ => Ok(None),
        }
    }

    async fn of_stream(&self, stream: &str) -> Result<Vec<Checkpoint>, AuditError> {
        match self {
            Self::File {
                checkpoints: all, ..
            } => Ok(all
                .iter()
                .filter(|c| c.stream_id == stream)
                .cloned()
                .collect()),
            Self::Postgres(w) => Ok(w.checkpoints(stream).await?),
        }
    }
}

async fn verify(args: VerifyArgs) -> Result<bool, AuditError> {
    if args.pubkey.is_empty() && !args.no_signatures {
        return Err(AuditError::invalid_input(
            "verify needs the trusted checkpoint public key: --pubkey <file> (the key you \
             pinned, kept apart from the log); --no-signatures checks the chain alone",
        ));
    }
    let log_dir = sqlite_dir(&args.db);
    let mut trusted_keys = Vec::with_capacity(args.pubkey.len());
    for path in &args.pubkey {
        refuse_key_beside_log(path, log_dir.as_deref())?;
        let text = std::fs::read_to_string(path)
            .map_err(|e| AuditError::invalid_input(format!("reading {}: {e}", path.display())))?;
        trusted_keys.push(parse_public_key(&text)?);
    }
    let options = VerifyOptions {
        trusted_keys,
        max_checkpoint_gap: args.max_checkpoint_gap,
        legacy_bodies: args.legacy_bodies,
        ..VerifyOptions::default()
    };
    let tsa_trust = match &args.tsa_ca {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| {
                AuditError::invalid_input(format!("reading {}: {e}", path.display()))
            })?;
            Some(
                TsaTrust::from_pem(&pem)
                    .map_err(|e| AuditError::invalid_input(format!("{}: {e}", path.display())))?,
            )
        }
        None => None,
    };
    let mut witnessed = Vec::with_capacity(args.witness.len());
    for spec in &args.witness {
        witnessed.push(Witnessed::open(spec).await?);
    }
    let store = Store::open(&args.db).await?;
    let store = store.as_dyn();
    let found = store.streams().await?;
    let mut ok = true;
    if args.no_signatures {
        println!(
            "WARNING: --no-signatures: checkpoint signatures were NOT checked; a log rewritten \
             with forged checkpoints passes this check"
        );
    }
    let to_verify: Vec<String> = if let Some(s) = args.stream {
        vec![s]
    } else if args.all_streams {
        println!(
            "WARNING: --all-streams: the log's {} stream(s) were not checked against a list of \
             expected streams; an added stream passes this check",
            found.len()
        );
        found.clone()
    } else if args.expect_stream.is_empty() {
        return Err(AuditError::invalid_input(format!(
            "name the streams the log must hold with --expect-stream <id> (repeatable), or \
             --all-streams; it holds {}",
            if found.is_empty() {
                "none".to_owned()
            } else {
                found.join(", ")
            }
        )));
    } else {
        for s in found.iter().filter(|s| !args.expect_stream.contains(s)) {
            ok = false;
            println!("FAILED {s}: unexpected stream (not given with --expect-stream)");
        }
        let mut expected = Vec::new();
        for s in &args.expect_stream {
            if expected.contains(s) {
                continue;
            }
            if found.contains(s) {
                expected.push(s.clone());
            } else {
                ok = false;
                println!("FAILED {s}: expected stream is missing from the log");
            }
        }
        expected
    };
    if to_verify.is_empty() && found.is_empty() {
        eprintln!("gateway-audit: no audit streams found");
        return Ok(false);
    }
    let unchecked = if options.trusted_keys.is_empty() {
        " (signatures NOT checked)"
    } else {
        ""
    };
    for s in &to_verify {
        let r = verify_stream(store, s, &options).await?;
        match &r.fault {
            None if r.records_checked == 0 => {
                ok = false;
                println!("FAILED {s}: the stream has no records");
            }
            None => {
                let head = r.head.as_ref().map(|h| h.0);
                let mut witnesses_ok = true;
                let mut notes = String::new();
                for (name, witness) in &witnessed {
                    let checkpoints = witness.of_stream(s).await?;
                    let w = check_witnessed(store, s, head, &checkpoints, &options.trusted_keys)
                        .await?;
                    match &w.fault {
                        Some(f) => {
                            witnesses_ok = false;
                            println!("FAILED {s}: witness {name}: {f}");
                        }
                        None => {
                            notes += &format!(
                                "; witness {name}: {} checkpoints, {} records after the newest \
                                 witnessed one{}",
                                w.witnessed,
                                w.unwitnessed_records,
                                w.newest_witnessed
                                    .map(|n| format!(" ({n})"))
                                    .unwrap_or_default()
                            );
                        }
                    }
                    if let Some(tokens) = witness.tsa_tokens(s)? {
                        match check_tokens(&tokens, tsa_trust.as_ref()) {
                            Ok(note) => notes += &format!("; witness {name}: {note}"),
                            Err(fault) => {
                                witnesses_ok = false;
                                println!("FAILED {s}: witness {name}: {fault}");
                            }
                        }
                    }
                }
                if r.checkpoint_keys.len() > 1 {
                    notes += &format!(
                        "; checkpoint key rotated {} time(s), keys in order: {}",
                        r.checkpoint_keys.len() - 1,
                        r.checkpoint_keys.join(" -> ")
                    );
                }
                if witnesses_ok {
                    println!(
                        "OK     {}: {} records, head {}, {} checkpoints verified{unchecked}{notes}",
                        r.stream_id,
                        r.records_checked,
                        head.unwrap_or(0),
                        r.checkpoints_checked,
                    );
                } else {
                    ok = false;
                }
            }
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

/// Checks every token against its checkpoint and the trusted TSA certificates: the note for the
/// report, or the first failure. Without trusted certificates, the note says they were not
/// checked.
fn check_tokens(tokens: &[Stamped], trust: Option<&TsaTrust>) -> Result<String, String> {
    let Some(trust) = trust else {
        return Ok(format!(
            "{} RFC 3161 tokens NOT checked (give --tsa-ca)",
            tokens.len()
        ));
    };
    let mut newest = None;
    for (cp, token) in tokens {
        let stamped = verify_token(token, cp, trust)
            .map_err(|e| format!("RFC 3161 token of checkpoint {}: {e}", cp.sequence))?;
        newest = Some((cp.sequence, stamped));
    }
    Ok(match newest {
        None => "no RFC 3161 tokens".to_owned(),
        Some((sequence, stamped)) => format!(
            "{} RFC 3161 tokens verified (checkpoint {sequence} stamped at {} by {})",
            tokens.len(),
            time::OffsetDateTime::from(stamped.gen_time)
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            stamped.tsa
        ),
    })
}

/// The directory of a SQLite log named by `db` (`None` for PostgreSQL).
fn sqlite_dir(db: &str) -> Option<PathBuf> {
    if db.starts_with("postgres://") || db.starts_with("postgresql://") {
        return None;
    }
    let path = db.strip_prefix("sqlite://").unwrap_or(db);
    let path = path.split('?').next().unwrap_or(path);
    let parent = std::path::Path::new(path).parent()?;
    let parent = if parent.as_os_str().is_empty() {
        std::path::Path::new(".")
    } else {
        parent
    };
    std::fs::canonicalize(parent).ok()
}

/// A trusted key must not come from the log's own directory: whoever can rewrite the log can
/// replace a key kept there.
fn refuse_key_beside_log(
    key: &std::path::Path,
    log_dir: Option<&std::path::Path>,
) -> Result<(), AuditError> {
    let Some(log_dir) = log_dir else {
        return Ok(());
    };
    let key_dir = std::fs::canonicalize(key)
        .ok()
        .and_then(|k| k.parent().map(std::path::Path::to_path_buf));
    if key_dir.as_deref().is_some_and(|k| k.starts_with(log_dir)) {
        return Err(AuditError::invalid_input(format!(
            "{} is in the log's directory ({}): a trusted key must be kept apart from the log \
             it verifies",
            key.display(),
            log_dir.display()
        )));
    }
    Ok(())
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
