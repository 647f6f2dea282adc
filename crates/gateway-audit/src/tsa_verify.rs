//! Checking an RFC 3161 time-stamp token offline: that a TSA the operator trusts signed, at
//! its `genTime`, the SHA-256 of exactly this checkpoint's signed message.
//!
//! What is checked, in order (RFC 3161 §2.4.2 and RFC 5652 §5.4, §11):
//! 1. the reply's status is granted (or granted with modifications) and it holds a token: a
//!    CMS `SignedData` whose content is a `TSTInfo`;
//! 2. the `TSTInfo`'s message imprint is SHA-256 of [`Checkpoint::message`];
//! 3. the one signer's signed attributes name `TSTInfo` as the content type and hold the digest
//!    of the `TSTInfo` bytes, and the signer's signature over those attributes verifies with the
//!    public key of the certificate the signer identifier names (ECDSA P-256 or RSA PKCS#1 v1.5,
//!    SHA-256);
//! 4. that certificate is for time stamping (extended key usage `timeStamping`, critical) and
//!    valid at `genTime`, and it is a trusted certificate or chains (through certificates in
//!    the token, at most four) to one, each signature checked.
//!
//! Revocation (CRL, OCSP) is not checked: the trusted certificates are the operator's
//! statement of which TSA keys count.

use crate::checkpoint::Checkpoint;
use cms::cert::CertificateChoices;
use cms::content_info::ContentInfo;
use cms::signed_data::{SignedData, SignerIdentifier};
use der::asn1::{ObjectIdentifier, OctetString};
use der::{Decode, Encode};
use sha2::{Digest, Sha256};
use std::time::SystemTime;
use x509_cert::Certificate;
use x509_tsp::{TimeStampResp, TstInfo};

const ID_SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
const ID_CT_TST_INFO: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.1.4");
const ID_CONTENT_TYPE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.3");
const ID_MESSAGE_DIGEST: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.4");
const ID_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const ECDSA_WITH_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const ID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const SHA256_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const ID_SUBJECT_KEY_IDENTIFIER: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.14");
const ID_EXT_KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.37");
const ID_KP_TIME_STAMPING: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.8");

/// The most certificates between the TSA's and a trusted one.
const MAX_CHAIN: usize = 4;

/// The certificates whose time-stamp tokens count: a TSA's own certificate or the CA that
/// issued it (PEM, as `scripts/services/tsa.sh` writes `GATEWAY_TEST_TSA_CA`).
#[derive(Debug, Clone)]
pub struct TsaTrust {
    anchors: Vec<Certificate>,
}

impl TsaTrust {
    /// Trusts every certificate in `pem` (one or more `CERTIFICATE` blocks).
    pub fn from_pem(pem: &[u8]) -> Result<Self, String> {
        let anchors =
            Certificate::load_pem_chain(pem).map_err(|e| format!("bad PEM certificate: {e}"))?;
        if anchors.is_empty() {
            return Err("no certificate in the trusted TSA file".into());
        }
        Ok(Self { anchors })
    }

    fn trusts(&self, cert: &Certificate) -> bool {
        self.anchors.iter().any(|a| a == cert)
    }

    fn issuer_of(&self, cert: &Certificate) -> Option<&Certificate> {
        self.anchors
            .iter()
            .find(|a| a.tbs_certificate.subject == cert.tbs_certificate.issuer)
    }
}

/// What a checked token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StampedCheckpoint {
    /// When the TSA says it saw the checkpoint.
    pub gen_time: SystemTime,
    /// The TSA certificate's subject.
    pub tsa: String,
}

/// Checks `reply` (a DER `TimeStampResp`, as a TSA witness keeps it) against `checkpoint` and
/// the trusted certificates; see the module docs. The error says which check failed.
pub fn verify_token(
    reply: &[u8],
    checkpoint: &Checkpoint,
    trust: &TsaTrust,
) -> Result<StampedCheckpoint, String> {
    let reply = TimeStampResp::from_der(reply).map_err(|e| format!("not a TimeStampResp: {e}"))?;
    let status = reply.status.status as u8;
    if status > 1 {
        return Err(format!("the TSA refused (PKIStatus {status})"));
    }
    let token: ContentInfo = reply
        .time_stamp_token
        .ok_or("the reply holds no time-stamp token")?;
    if token.content_type != ID_SIGNED_DATA {
        return Err("the token is not CMS SignedData".into());
    }
    let signed: SignedData = token
        .content
        .decode_as()
        .map_err(|e| format!("bad SignedData: {e}"))?;
    let content = &signed.encap_content_info;
    if content.econtent_type != ID_CT_TST_INFO {
        return Err("the token's content is not a TSTInfo".into());
    }
    let tst_der = content
        .econtent
        .as_ref()
        .ok_or("the token has no TSTInfo")?
        .decode_as::<OctetString>()
        .map_err(|e| format!("bad TSTInfo wrapper: {e}"))?;
    let tst_der = tst_der.as_bytes();
    let tst = TstInfo::from_der(tst_der).map_err(|e| format!("bad TSTInfo: {e}"))?;

    // 2. It stamps this checkpoint.
    let message = Checkpoint::message(
        &checkpoint.stream_id,
        checkpoint.sequence,
        &checkpoint.head_hash,
        checkpoint.time,
    )
    .map_err(|e| e.to_string())?;
    if tst.message_imprint.hash_algorithm.oid != ID_SHA256
        || tst.message_imprint.hashed_message.as_bytes() != Sha256::digest(&message).as_slice()
    {
        return Err(format!(
            "the token stamps another message than the checkpoint at sequence {}",
            checkpoint.sequence
        ));
    }

    // 3. Its signer signed it.
    let [signer] = signed.signer_infos.0.as_slice() else {
        return Err(format!(
            "the token has {} signers, not one",
            signed.signer_infos.0.len()
        ));
    };
    if signer.digest_alg.oid != ID_SHA256 {
        return Err(format!(
            "unsupported digest algorithm {}",
            signer.digest_alg.oid
        ));
    }
    let attrs = signer
        .signed_attrs
        .as_ref()
        .ok_or("the token's signer has no signed attributes")?;
    let attr = |oid: ObjectIdentifier| {
        attrs
            .iter()
            .find(|a| a.oid == oid)
            .and_then(|a| a.values.get(0))
    };
    let content_type: ObjectIdentifier = attr(ID_CONTENT_TYPE)
        .and_then(|v| v.decode_as().ok())
        .ok_or("the signed attributes lack the content type")?;
    if content_type != ID_CT_TST_INFO {
        return Err("the signed content type is not TSTInfo".into());
    }
    let digest: OctetString = attr(ID_MESSAGE_DIGEST)
        .and_then(|v| v.decode_as().ok())
        .ok_or("the signed attributes lack the message digest")?;
    if digest.as_bytes() != Sha256::digest(tst_der).as_slice() {
        return Err("the signed digest is not the TSTInfo's (the token was altered)".into());
    }
    let certs: Vec<&Certificate> = signed
        .certificates
        .as_ref()
        .map(|set| {
            set.0
                .iter()
                .filter_map(|c| match c {
                    CertificateChoices::Certificate(c) => Some(c),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let tsa_cert = certs
        .iter()
        .copied()
        .chain(trust.anchors.iter())
        .find(|c| names(&signer.sid, c))
        .ok_or("the token does not carry its signer's certificate (and no trusted one matches)")?;
    let signed_bytes = attrs
        .to_der()
        .map_err(|e| format!("re-encoding the signed attributes: {e}"))?;
    check_signature(
        tsa_cert,
        &signer.signature_algorithm.oid,
        &signed_bytes,
        signer.signature.as_bytes(),
    )
    .map_err(|e| format!("the TSA's signature does not verify: {e}"))?;

    // 4. The signer is a time-stamping certificate the operator trusts, valid then.
    let gen_time = tst.gen_time.to_system_time();
    check_time_stamping(tsa_cert)?;
    valid_at(tsa_cert, gen_time)?;
    let mut cert = tsa_cert;
    for _ in 0..=MAX_CHAIN {
        if trust.trusts(cert) {
            return Ok(StampedCheckpoint {
                gen_time,
                tsa: tsa_cert.tbs_certificate.subject.to_string(),
            });
        }
        let issuer = trust
            .issuer_of(cert)
            .or_else(|| {
                certs.iter().copied().find(|c| {
                    c.tbs_certificate.subject == cert.tbs_certificate.issuer && *c != cert
                })
            })
            .ok_or_else(|| {
                format!(
                    "the TSA certificate {} does not chain to a trusted certificate",
                    tsa_cert.tbs_certificate.subject
                )
            })?;
        let tbs = cert
            .tbs_certificate
            .to_der()
            .map_err(|e| format!("re-encoding a certificate: {e}"))?;
        check_signature(
            issuer,
            &cert.signature_algorithm.oid,
            &tbs,
            cert.signature.raw_bytes(),
        )
        .map_err(|e| {
            format!(
                "certificate {} is not signed by {}: {e}",
                cert.tbs_certificate.subject, issuer.tbs_certificate.subject
            )
        })?;
        valid_at(issuer, gen_time)?;
        if trust.trusts(issuer) {
            return Ok(StampedCheckpoint {
                gen_time,
                tsa: tsa_cert.tbs_certificate.subject.to_string(),
            });
        }
        cert = issuer;
    }
    Err("the TSA certificate chain is too long".into())
}

/// Whether `sid` names `cert`.
fn names(sid: &SignerIdentifier, cert: &Certificate) -> bool {
    match sid {
        SignerIdentifier::IssuerAndSerialNumber(id) => {
            id.issuer == cert.tbs_certificate.issuer
                && id.serial_number == cert.tbs_certificate.serial_number
        }
        SignerIdentifier::SubjectKeyIdentifier(ski) => cert
            .tbs_certificate
            .extensions
            .iter()
            .flatten()
            .filter(|e| e.extn_id == ID_SUBJECT_KEY_IDENTIFIER)
            .filter_map(|e| {
                x509_cert::ext::pkix::SubjectKeyIdentifier::from_der(e.extn_value.as_bytes()).ok()
            })
            .any(|own| own == *ski),
    }
}

/// Verifies `signature` over `message` with `signer`'s public key, for the algorithms TSAs
/// use: ECDSA P-256 and RSA PKCS#1 v1.5, with SHA-256.
fn check_signature(
    signer: &Certificate,
    algorithm: &ObjectIdentifier,
    message: &[u8],
    signature: &[u8],
) -> Result<(), String> {
    let spki = &signer.tbs_certificate.subject_public_key_info;
    let key_der = spki.to_der().map_err(|e| e.to_string())?;
    let key_kind = spki.algorithm.oid;
    if key_kind == ID_EC_PUBLIC_KEY && *algorithm == ECDSA_WITH_SHA256 {
        use p256::ecdsa::signature::Verifier as _;
        use p256::pkcs8::DecodePublicKey as _;
        let key = p256::ecdsa::VerifyingKey::from_public_key_der(&key_der)
            .map_err(|e| format!("not a P-256 key: {e}"))?;
        let sig = p256::ecdsa::Signature::from_der(signature)
            .map_err(|e| format!("bad ECDSA signature: {e}"))?;
        return key
            .verify(message, &sig)
            .map_err(|_| "bad signature".into());
    }
    // RSA signers name either the key's algorithm or the signature's (RFC 5754 §3.2).
    if key_kind == RSA_ENCRYPTION && (*algorithm == SHA256_WITH_RSA || *algorithm == RSA_ENCRYPTION)
    {
        use rsa::pkcs8::DecodePublicKey as _;
        use rsa::signature::Verifier as _;
        let key = rsa::RsaPublicKey::from_public_key_der(&key_der)
            .map_err(|e| format!("not an RSA key: {e}"))?;
        let key = rsa::pkcs1v15::VerifyingKey::<Sha256>::new(key);
        let sig = rsa::pkcs1v15::Signature::try_from(signature)
            .map_err(|e| format!("bad RSA signature: {e}"))?;
        return key
            .verify(message, &sig)
            .map_err(|_| "bad signature".into());
    }
    Err(format!(
        "unsupported signature algorithm {algorithm} with key {key_kind} (ECDSA P-256 and RSA \
         with SHA-256 are supported)"
    ))
}

/// RFC 3161 §2.3: the TSA's certificate has exactly one, critical, extended key usage:
/// `timeStamping`.
fn check_time_stamping(cert: &Certificate) -> Result<(), String> {
    let eku = cert
        .tbs_certificate
        .extensions
        .iter()
        .flatten()
        .find(|e| e.extn_id == ID_EXT_KEY_USAGE)
        .ok_or("the TSA certificate has no extended key usage")?;
    let usages = x509_cert::ext::pkix::ExtendedKeyUsage::from_der(eku.extn_value.as_bytes())
        .map_err(|e| format!("bad extended key usage: {e}"))?;
    if !eku.critical || usages.0 != [ID_KP_TIME_STAMPING] {
        return Err(
            "the TSA certificate is not for time stamping only (critical timeStamping EKU)".into(),
        );
    }
    Ok(())
}

fn valid_at(cert: &Certificate, at: SystemTime) -> Result<(), String> {
    let validity = &cert.tbs_certificate.validity;
    if at < validity.not_before.to_system_time() || at > validity.not_after.to_system_time() {
        return Err(format!(
            "certificate {} was not valid at the stamped time",
            cert.tbs_certificate.subject
        ));
    }
    Ok(())
}
