//! The manifest (what a report was made from, and the SHA-256 of its canonical body) and the
//! Ed25519 signature over the manifest's canonical bytes.
//!
//! The signed file is canonical JSON: `{"manifest", "manifest_sha256", "report", "signature"}`.
//! To check it by hand: `report_sha256` is the SHA-256 of the `report` member's bytes as they
//! stand in the file; `manifest_sha256` that of the `manifest` member's; the signature is over the
//! `manifest` member's bytes, with the key in `signature.public_key_pem` (SPKI PEM, so
//! `openssl pkeyutl -verify -rawin` checks it too).

use std::path::Path;

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signer, Verifier};
pub use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::Report;
use super::canonical::canonical_of;
use super::inputs::ReportInputs;
use crate::Error;

/// What a report was made from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub schema_version: String,
    pub period_from: String,
    pub period_to: String,
    pub site: String,
    /// Every meter the period's data came from, `host/meter (kind)`.
    pub meters: Vec<String>,
    pub factor_tables: Vec<FactorTableLine>,
    pub intensity_feeds: Vec<FeedLine>,
    pub software: String,
    /// SHA-256 of the aggregator config the figures were made with (addresses, paths and the
    /// key left out), as the ledger stored it.
    pub config_sha256: String,
    /// Each collector's batches in the ledger when the report was made.
    pub ledger: Vec<CollectorLine>,
    /// SHA-256 of the `report` member's canonical bytes.
    pub report_sha256: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FactorTableLine {
    pub name: String,
    pub version: String,
    pub sha256: String,
    pub source: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedLine {
    pub file: String,
    pub sha256: String,
    pub layout: String,
    pub hour_convention: String,
    pub hours: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectorLine {
    pub collector: String,
    pub host: String,
    pub first_seq: i64,
    pub last_seq: i64,
}

/// An Ed25519 signature and the key that made it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    pub algorithm: String,
    /// The public key, SPKI PEM.
    pub public_key_pem: String,
    /// The first 16 hex digits of the SHA-256 of the raw public key.
    pub key_id: String,
    /// Over the manifest's canonical bytes; lower-case hex.
    pub value: String,
}

/// A report with its manifest and signature, and the signed JSON file's text.
#[derive(Clone, Debug, PartialEq)]
pub struct SignedReport {
    pub report: Report,
    pub manifest: Manifest,
    pub signature: Option<Signature>,
    /// The whole file: canonical JSON and a newline.
    pub json: String,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|index| u8::from_str_radix(text.get(index..index + 2)?, 16).ok())
        .collect()
}

/// The manifest of `report` made from `inputs`, its hash not yet filled when `report_sha256`
/// is empty.
pub fn manifest(inputs: &ReportInputs, report_sha256: String) -> Manifest {
    Manifest {
        schema_version: super::SCHEMA_VERSION.to_owned(),
        period_from: footprint_core::time::format_rfc3339(footprint_core::UnixNanos(
            inputs.from_ns,
        )),
        period_to: footprint_core::time::format_rfc3339(footprint_core::UnixNanos(inputs.to_ns)),
        site: inputs.disclosure.name.clone().unwrap_or_default(),
        meters: inputs
            .meters
            .iter()
            .map(|meter| format!("{}/{} ({})", meter.host, meter.meter_id, meter.kind))
            .collect(),
        factor_tables: factor_table_lines(inputs),
        intensity_feeds: feed_lines(inputs),
        software: format!("footprint {}", inputs.software_version),
        config_sha256: inputs.config_sha256.clone(),
        ledger: inputs
            .collectors
            .iter()
            .map(|range| CollectorLine {
                collector: range.collector.clone(),
                host: range.host.clone(),
                first_seq: range.first_seq,
                last_seq: range.last_seq,
            })
            .collect(),
        report_sha256,
    }
}

/// The factor tables `inputs` name, as the manifest and the carbon section list them.
pub fn factor_table_lines(inputs: &ReportInputs) -> Vec<FactorTableLine> {
    inputs
        .factor_tables
        .iter()
        .map(|table| FactorTableLine {
            name: table.name.clone(),
            version: table.version.clone(),
            sha256: table.sha256.clone(),
            source: table.source.clone(),
        })
        .collect()
}

/// The intensity feeds `inputs` name, likewise.
pub fn feed_lines(inputs: &ReportInputs) -> Vec<FeedLine> {
    inputs
        .feeds
        .iter()
        .map(|feed| FeedLine {
            file: feed.file.clone(),
            sha256: feed.sha256.clone(),
            layout: feed.layout.clone(),
            hour_convention: feed.hour_convention.clone(),
            hours: feed.hours,
        })
        .collect()
}

/// `report` with its manifest, signed with `key` when there is one.
///
/// # Errors
/// The report holds something with no canonical form (a float).
pub fn sign(
    report: Report,
    inputs: &ReportInputs,
    key: Option<&SigningKey>,
) -> Result<SignedReport, Error> {
    let body = canonical_of(&report)?;
    let manifest = manifest(inputs, sha256_hex(body.as_bytes()));
    let manifest_bytes = canonical_of(&manifest)?;
    let signature = key.map(|key| signature_of(key, manifest_bytes.as_bytes()));
    assemble(report, manifest, signature)
}

/// The file of `report`, `manifest` and `signature` as they are.
///
/// # Errors
/// The report holds something with no canonical form (a float).
pub fn assemble(
    report: Report,
    manifest: Manifest,
    signature: Option<Signature>,
) -> Result<SignedReport, Error> {
    let manifest_bytes = canonical_of(&manifest)?;
    let whole = serde_json::json!({
        "manifest": manifest,
        "manifest_sha256": sha256_hex(manifest_bytes.as_bytes()),
        "report": report,
        "signature": signature,
    });
    let mut json =
        super::canonical::to_canonical(&whole).map_err(|error| Error::Report(error.to_string()))?;
    json.push('\n');
    Ok(SignedReport {
        report,
        manifest,
        signature,
        json,
    })
}

fn signature_of(key: &SigningKey, message: &[u8]) -> Signature {
    let public = key.verifying_key();
    Signature {
        algorithm: "Ed25519".into(),
        public_key_pem: public.to_public_key_pem(LineEnding::LF).unwrap_or_default(),
        key_id: key_id(&public),
        value: hex(&key.sign(message).to_bytes()),
    }
}

pub fn key_id(key: &VerifyingKey) -> String {
    sha256_hex(key.as_bytes())[..16].to_owned()
}

/// Checks `signature` over `message`.
///
/// # Errors
/// What is wrong: an unreadable key or signature, or a signature that does not match.
pub fn check_signature(signature: &Signature, message: &[u8]) -> Result<VerifyingKey, String> {
    if signature.algorithm != "Ed25519" {
        return Err(format!(
            "signature.algorithm: {:?} is not Ed25519",
            signature.algorithm
        ));
    }
    let key = VerifyingKey::from_public_key_pem(&signature.public_key_pem).map_err(|error| {
        format!("signature.public_key_pem: not an Ed25519 public key ({error})")
    })?;
    let bytes: [u8; 64] = unhex(&signature.value)
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| "signature.value: not 64 bytes of hex".to_owned())?;
    key.verify(message, &ed25519_dalek::Signature::from_bytes(&bytes))
        .map_err(|_| {
            format!(
                "signature.value: does not match the manifest under key {}",
                key_id(&key)
            )
        })?;
    Ok(key)
}

/// Why a key could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {reason}")]
    Unreadable { path: String, reason: String },
    #[error("{path}: {reason}")]
    Unwritable { path: String, reason: String },
}

/// Reads a PKCS#8 PEM Ed25519 private key.
///
/// # Errors
/// The file is missing, unreadable or not such a key; the error names the path.
pub fn load_signing_key(path: &Path) -> Result<SigningKey, KeyError> {
    let unreadable = |reason: String| KeyError::Unreadable {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|error| unreadable(error.to_string()))?;
    SigningKey::from_pkcs8_pem(&text)
        .map_err(|error| unreadable(format!("not a PKCS#8 PEM Ed25519 private key ({error})")))
}

/// Reads an SPKI PEM Ed25519 public key.
///
/// # Errors
/// The file is missing, unreadable or not such a key.
pub fn load_public_key(path: &Path) -> Result<VerifyingKey, KeyError> {
    let unreadable = |reason: String| KeyError::Unreadable {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|error| unreadable(error.to_string()))?;
    VerifyingKey::from_public_key_pem(&text)
        .map_err(|error| unreadable(format!("not an SPKI PEM Ed25519 public key ({error})")))
}

/// Makes a key pair: `private` (PKCS#8 PEM, readable by its owner only) and `public` (SPKI PEM).
/// Refuses to overwrite an existing private key.
///
/// # Errors
/// The private key exists, randomness is unavailable, or a file cannot be written.
pub fn generate_key_pair(private: &Path, public: &Path) -> Result<VerifyingKey, KeyError> {
    let unwritable = |path: &Path, reason: String| KeyError::Unwritable {
        path: path.display().to_string(),
        reason,
    };
    if private.exists() {
        return Err(unwritable(
            private,
            "already exists; remove it first if you mean to replace the key".into(),
        ));
    }
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|error| unwritable(private, error.to_string()))?;
    let key = SigningKey::from_bytes(&secret);
    let pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|error| unwritable(private, error.to_string()))?;
    write_private(private, pem.as_bytes())
        .map_err(|error| unwritable(private, error.to_string()))?;
    let public_pem = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|error| unwritable(public, error.to_string()))?;
    std::fs::write(public, public_pem).map_err(|error| unwritable(public, error.to_string()))?;
    Ok(key.verifying_key())
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn generated_keys_sign_and_verify_and_a_changed_byte_fails() {
        let dir = tempfile::tempdir().unwrap();
        let (private, public) = (dir.path().join("k.pem"), dir.path().join("k.pub"));
        let verifying = generate_key_pair(&private, &public).unwrap();
        assert!(
            generate_key_pair(&private, &public).is_err(),
            "overwrote a key"
        );
        let key = load_signing_key(&private).unwrap();
        assert_eq!(load_public_key(&public).unwrap(), verifying);
        let signature = signature_of(&key, b"manifest");
        assert_eq!(check_signature(&signature, b"manifest").unwrap(), verifying);
        let error = check_signature(&signature, b"manifesT").unwrap_err();
        assert!(error.contains("does not match"), "{error}");
        let missing = load_signing_key(&dir.path().join("none.pem")).unwrap_err();
        assert!(missing.to_string().contains("none.pem"), "{missing}");
    }
}
