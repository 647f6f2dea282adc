//! [`Pkcs11Signer`]: checkpoints signed by an Ed25519 key that never leaves a PKCS#11 token.

use super::CheckpointSigner;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use ed25519_dalek::{Signature, Verifier as _, VerifyingKey};
use gateway_core::audit::AuditError;
use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

/// The DER encoding of the curve name `edwards25519` (a PrintableString), as CKA_EC_PARAMS
/// for an Ed25519 key (PKCS#11 3.0, 2.3.10; what SoftHSM2 and most tokens accept).
const ED25519_PARAMS: &[u8] = b"\x13\x0cedwards25519";

/// Where the key is: the PKCS#11 module, the token and the key's label, and the user PIN.
/// `Debug` hides the PIN.
#[derive(Clone)]
pub struct Pkcs11Config {
    /// The module (shared library) to load, e.g. `/usr/lib/softhsm/libsofthsm2.so`.
    pub module: PathBuf,
    /// The token's label (`CKA_LABEL` of the token, as `softhsm2-util --show-slots` prints).
    pub token_label: String,
    /// The label of the key pair on the token.
    pub key_label: String,
    pin: AuthPin,
}

impl Pkcs11Config {
    /// The key `key_label` on the token `token_label` of `module`, logging in with `pin`.
    pub fn new(
        module: impl Into<PathBuf>,
        token_label: impl Into<String>,
        key_label: impl Into<String>,
        pin: impl Into<String>,
    ) -> Self {
        Self {
            module: module.into(),
            token_label: token_label.into(),
            key_label: key_label.into(),
            pin: AuthPin::new(pin.into().into_boxed_str()),
        }
    }
}

impl fmt::Debug for Pkcs11Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Config")
            .field("module", &self.module)
            .field("token_label", &self.token_label)
            .field("key_label", &self.key_label)
            .field("pin", &"[REDACTED]")
            .finish()
    }
}

/// Signs checkpoints inside a PKCS#11 token with pure Ed25519 (`CKM_EDDSA`). The private key
/// is created on the token sensitive and non-extractable ([`generate`](Self::generate)), and
/// [`open`](Self::open) refuses a key that could ever leave it. Every signature is checked
/// against the public key before it is used, so a token answering with another key fails the
/// checkpoint instead of writing one no verifier accepts.
///
/// One session per signer, used by one signature at a time (PKCS#11 sessions are not
/// thread-safe); it is reopened once if the token closed it (a restart, a removed device).
pub struct Pkcs11Signer {
    config: Pkcs11Config,
    module: Arc<Module>,
    slot: Slot,
    public: VerifyingKey,
    /// `None` only while dropping (the session closes under the module's lock).
    state: Mutex<Option<Open>>,
}

/// The live session and the private key's handle in it.
struct Open {
    session: Session,
    private_key: ObjectHandle,
}

impl Pkcs11Signer {
    /// Opens the existing key pair `config.key_label`. Fails (with what to do) when the module
    /// does not load, the token or key is not there, the PIN is wrong, or the private key is
    /// extractable or was ever not sensitive.
    pub fn open(config: &Pkcs11Config) -> Result<Self, AuditError> {
        let module = context(config)?;
        let calls = module.lock();
        let slot = token(&module.pkcs11, config)?;
        let session = login(&module.pkcs11, slot, config, false)?;
        let public_key = find_key(&session, config, ObjectClass::PUBLIC_KEY)?;
        let private_key = find_key(&session, config, ObjectClass::PRIVATE_KEY)?;
        refuse_exportable(&session, private_key, config)?;
        let public = read_public_key(&session, public_key, config)?;
        drop(calls);
        Ok(Self {
            config: config.clone(),
            module,
            slot,
            public,
            state: Mutex::new(Some(Open {
                session,
                private_key,
            })),
        })
    }

    /// Generates a new Ed25519 key pair labelled `config.key_label` on the token (the private
    /// key sensitive, non-extractable, usable only for signing) and opens it. Refuses when a
    /// key with that label exists: a rotation uses a new label.
    pub fn generate(config: &Pkcs11Config) -> Result<Self, AuditError> {
        let module = context(config)?;
        let calls = module.lock();
        let slot = token(&module.pkcs11, config)?;
        let session = login(&module.pkcs11, slot, config, true)?;
        let existing = session
            .find_objects(&[Attribute::Label(config.key_label.as_bytes().to_vec())])
            .map_err(|e| ck_error(config, "looking for existing keys", e))?;
        if !existing.is_empty() {
            return Err(AuditError::invalid_input(format!(
                "token {:?} already holds a key labelled {:?}: open it, or generate the new key \
                 of a rotation under a new label",
                config.token_label, config.key_label
            )));
        }
        let label = Attribute::Label(config.key_label.as_bytes().to_vec());
        let public_template = [
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Verify(true),
            Attribute::EcParams(ED25519_PARAMS.to_vec()),
            label.clone(),
        ];
        let private_template = [
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Decrypt(false),
            Attribute::Derive(false),
            Attribute::Unwrap(false),
            label,
        ];
        session
            .generate_key_pair(
                &Mechanism::EccEdwardsKeyPairGen,
                &public_template,
                &private_template,
            )
            .map_err(|e| ck_error(config, "generating an Ed25519 key pair", e))?;
        drop(session);
        drop(calls);
        Self::open(config)
    }

    /// The token's slot.
    pub fn slot(&self) -> Slot {
        self.slot
    }

    fn session(&self) -> MutexGuard<'_, Option<Open>> {
        // A panic while signing cannot leave the session half-used in a way a later signature
        // would notice (each C_Sign is one call), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn sign_once(&self, open: &Open, message: &[u8]) -> Result<Vec<u8>, CkError> {
        let mechanism = Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure));
        open.session.sign(&mechanism, open.private_key, message)
    }

    /// A fresh session and key handle, after the token closed the old one.
    fn reopen(&self) -> Result<Open, AuditError> {
        let session = login(&self.module.pkcs11, self.slot, &self.config, false)?;
        let private_key = find_key(&session, &self.config, ObjectClass::PRIVATE_KEY)?;
        Ok(Open {
            session,
            private_key,
        })
    }
}

impl CheckpointSigner for Pkcs11Signer {
    fn verifying_key(&self) -> VerifyingKey {
        self.public
    }

    fn sign_message(&self, message: &[u8]) -> Result<Signature, AuditError> {
        let mut state = self.session();
        let calls = self.module.lock();
        let open = state
            .as_mut()
            .ok_or_else(|| AuditError::internal_msg("PKCS#11 signer used while dropped"))?;
        let bytes = match self.sign_once(open, message) {
            Err(CkError::Pkcs11(
                RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::UserNotLoggedIn
                | RvError::KeyHandleInvalid
                | RvError::ObjectHandleInvalid,
                _,
            )) => {
                *open = self.reopen()?;
                self.sign_once(open, message)
            }
            other => other,
        }
        .map_err(|e| ck_error(&self.config, "signing a checkpoint", e))?;
        drop(calls);
        let bytes: [u8; 64] = bytes.try_into().map_err(|b: Vec<u8>| {
            AuditError::internal_msg(format!(
                "PKCS#11 token {:?} returned a {}-byte signature, not an Ed25519 one",
                self.config.token_label,
                b.len()
            ))
        })?;
        let signature = Signature::from_bytes(&bytes);
        self.public.verify(message, &signature).map_err(|_| {
            AuditError::internal_msg(format!(
                "PKCS#11 key {:?} on token {:?} signed with a key other than its public key {}",
                self.config.key_label,
                self.config.token_label,
                self.key_id()
            ))
        })?;
        Ok(signature)
    }
}

impl Drop for Pkcs11Signer {
    fn drop(&mut self) {
        let open = self.session().take();
        let _calls = self.module.lock();
        drop(open);
    }
}

impl fmt::Debug for Pkcs11Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Signer")
            .field("key_id", &self.key_id())
            .field("module", &self.config.module)
            .field("token_label", &self.config.token_label)
            .field("key_label", &self.config.key_label)
            .finish_non_exhaustive()
    }
}

/// A loaded module: the process's one context for it, and the lock every call through it
/// takes.
struct Module {
    pkcs11: Pkcs11,
    /// Calls into one module are serialised: SoftHSM2 (2.6) crashed when sessions of one
    /// process signed, logged in and closed on several threads at once, and a checkpoint every
    /// 64 records leaves nothing to gain from parallel signing.
    calls: Mutex<()>,
}

impl Module {
    fn lock(&self) -> MutexGuard<'_, ()> {
        // The guarded value is (); a panic under it leaves nothing inconsistent.
        self.calls.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The process's one context per module: `C_Initialize` may be called once per process per
/// module, and every signer on the module shares it (finalizing it under another signer would
/// close that signer's sessions).
fn context(config: &Pkcs11Config) -> Result<Arc<Module>, AuditError> {
    static CONTEXTS: OnceLock<Mutex<HashMap<PathBuf, Arc<Module>>>> = OnceLock::new();
    let mut contexts = CONTEXTS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(module) = contexts.get(&config.module) {
        return Ok(Arc::clone(module));
    }
    let pkcs11 = Pkcs11::new(&config.module).map_err(|e| {
        AuditError::unavailable(
            format!(
                "loading the PKCS#11 module {} (is the token's library installed?)",
                config.module.display()
            ),
            e,
        )
    })?;
    match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(ck_error(config, "initializing the module", e)),
    }
    let module = Arc::new(Module {
        pkcs11,
        calls: Mutex::new(()),
    });
    contexts.insert(config.module.clone(), Arc::clone(&module));
    Ok(module)
}

/// The slot holding the token labelled `config.token_label` (the module's lock held).
fn token(pkcs11: &Pkcs11, config: &Pkcs11Config) -> Result<Slot, AuditError> {
    let slots = pkcs11
        .get_slots_with_initialized_token()
        .map_err(|e| ck_error(config, "listing slots", e))?;
    let mut labels = Vec::new();
    for slot in slots {
        let info = pkcs11
            .get_token_info(slot)
            .map_err(|e| ck_error(config, "reading token information", e))?;
        let label = info.label().trim_end().to_owned();
        if label == config.token_label {
            return Ok(slot);
        }
        labels.push(label);
    }
    Err(AuditError::unavailable_msg(format!(
        "no initialized token labelled {:?} in {} (tokens there: {labels:?}); initialize one, \
         e.g. `softhsm2-util --init-token --free --label {:?}`",
        config.token_label,
        config.module.display(),
        config.token_label
    )))
}

/// A session on `slot`, logged in as the user.
fn login(
    pkcs11: &Pkcs11,
    slot: Slot,
    config: &Pkcs11Config,
    read_write: bool,
) -> Result<Session, AuditError> {
    let session = if read_write {
        pkcs11.open_rw_session(slot)
    } else {
        pkcs11.open_ro_session(slot)
    }
    .map_err(|e| ck_error(config, "opening a session", e))?;
    match session.login(UserType::User, Some(&config.pin)) {
        // Login is per token and application: another signer's session may hold it already.
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(session),
        Err(CkError::Pkcs11(
            RvError::PinIncorrect | RvError::PinInvalid | RvError::PinLenRange,
            _,
        )) => Err(AuditError::invalid_input(format!(
            "PKCS#11 token {:?}: the user PIN was refused",
            config.token_label
        ))),
        Err(e) => Err(ck_error(config, "logging in", e)),
    }
}

/// The one Ed25519 key of class `class` labelled `config.key_label`.
fn find_key(
    session: &Session,
    config: &Pkcs11Config,
    class: ObjectClass,
) -> Result<ObjectHandle, AuditError> {
    let found = session
        .find_objects(&[
            Attribute::Class(class),
            Attribute::KeyType(KeyType::EC_EDWARDS),
            Attribute::Label(config.key_label.as_bytes().to_vec()),
        ])
        .map_err(|e| ck_error(config, "looking up the key", e))?;
    let which = if class == ObjectClass::PRIVATE_KEY {
        "private"
    } else {
        "public"
    };
    match found.as_slice() {
        [one] => Ok(*one),
        [] => Err(AuditError::unavailable_msg(format!(
            "token {:?} holds no Ed25519 {which} key labelled {:?}; create the key pair with \
             Pkcs11Signer::generate (or `gateway-audit keygen --pkcs11-module …`)",
            config.token_label, config.key_label
        ))),
        many => Err(AuditError::invalid_input(format!(
            "token {:?} holds {} Ed25519 {which} keys labelled {:?}: labels must name one key",
            config.token_label,
            many.len(),
            config.key_label
        ))),
    }
}

/// Refuses a private key that is, or ever was, extractable or not sensitive: such a key may
/// exist outside the token, and the point of the token is that it does not.
fn refuse_exportable(
    session: &Session,
    key: ObjectHandle,
    config: &Pkcs11Config,
) -> Result<(), AuditError> {
    let attributes = session
        .get_attributes(
            key,
            &[
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::AlwaysSensitive,
                AttributeType::NeverExtractable,
            ],
        )
        .map_err(|e| ck_error(config, "reading the private key's attributes", e))?;
    let (mut sensitive, mut extractable) = (false, true);
    let (mut always_sensitive, mut never_extractable) = (false, false);
    for attribute in attributes {
        match attribute {
            Attribute::Sensitive(v) => sensitive = v,
            Attribute::Extractable(v) => extractable = v,
            Attribute::AlwaysSensitive(v) => always_sensitive = v,
            Attribute::NeverExtractable(v) => never_extractable = v,
            _ => {}
        }
    }
    if sensitive && !extractable && always_sensitive && never_extractable {
        Ok(())
    } else {
        Err(AuditError::invalid_input(format!(
            "private key {:?} on token {:?} can leave the token (sensitive={sensitive}, \
             extractable={extractable}, always sensitive={always_sensitive}, never \
             extractable={never_extractable}); generate a non-extractable key with \
             Pkcs11Signer::generate",
            config.key_label, config.token_label
        )))
    }
}

/// The Ed25519 public key from the public key object's CKA_EC_POINT: the 32-byte point,
/// DER-wrapped in an OCTET STRING (as PKCS#11 specifies) or bare (as some tokens return it).
fn read_public_key(
    session: &Session,
    key: ObjectHandle,
    config: &Pkcs11Config,
) -> Result<VerifyingKey, AuditError> {
    let attributes = session
        .get_attributes(key, &[AttributeType::EcPoint])
        .map_err(|e| ck_error(config, "reading the public key", e))?;
    let point = attributes.into_iter().find_map(|a| match a {
        Attribute::EcPoint(point) => Some(point),
        _ => None,
    });
    let bytes: Option<[u8; 32]> = match point.as_deref() {
        Some([0x04, 0x20, rest @ ..]) if rest.len() == 32 => rest.try_into().ok(),
        Some(bare) if bare.len() == 32 => bare.try_into().ok(),
        _ => None,
    };
    bytes
        .and_then(|b| VerifyingKey::from_bytes(&b).ok())
        .ok_or_else(|| {
            AuditError::invalid_input(format!(
                "public key {:?} on token {:?} is not an Ed25519 point",
                config.key_label, config.token_label
            ))
        })
}

fn ck_error(config: &Pkcs11Config, what: &str, e: CkError) -> AuditError {
    AuditError::unavailable(
        format!(
            "PKCS#11 token {:?} ({}): {what}",
            config.token_label,
            config.module.display()
        ),
        e,
    )
}
