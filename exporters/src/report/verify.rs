//! Reading a report file back (JSON; the JSON embedded in the HTML; `report.json` in the CSV
//! archive), checking its hashes and signature, and naming the fields where it differs from the
//! report made again from the ledger.

use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

use super::Format;
use super::signing::{Manifest, Signature, check_signature, sha256_hex};

/// Where the HTML keeps the signed JSON (with `</` written `<\/`).
pub const HTML_SCRIPT_OPEN: &str = r#"<script type="application/json" id="footprint-report">"#;
pub const HTML_SCRIPT_CLOSE: &str = "</script>";
/// The signed JSON's name in the CSV archive.
pub const ZIP_REPORT_NAME: &str = "report.json";

/// A report file as read back: the members' bytes as they stand in the file.
#[derive(Debug)]
pub struct ReadReport {
    pub format: Format,
    /// The signed JSON (for HTML and CSV, the copy inside).
    pub json: String,
    pub report_bytes: String,
    pub manifest_bytes: String,
    pub manifest: Manifest,
    pub manifest_sha256: String,
    pub signature: Option<Signature>,
}

#[derive(Deserialize)]
struct RawFile<'a> {
    #[serde(borrow)]
    report: &'a RawValue,
    #[serde(borrow)]
    manifest: &'a RawValue,
    manifest_sha256: String,
    signature: Option<Signature>,
}

/// Reads `bytes` as a report in any of its formats.
///
/// # Errors
/// Not a report, with where reading stopped.
pub fn read(bytes: &[u8]) -> Result<ReadReport, String> {
    let (format, json) = if bytes.starts_with(b"PK") {
        (Format::Csv, super::csv::report_json_of(bytes)?)
    } else {
        let text = std::str::from_utf8(bytes)
            .map_err(|error| format!("not UTF-8 text at byte {}", error.valid_up_to()))?;
        if text.trim_start().starts_with('{') {
            (Format::Json, text.to_owned())
        } else {
            let start = text
                .find(HTML_SCRIPT_OPEN)
                .ok_or("neither a JSON report nor a Footprint HTML report (no embedded report)")?
                + HTML_SCRIPT_OPEN.len();
            let end = text[start..]
                .find(HTML_SCRIPT_CLOSE)
                .ok_or("the HTML's embedded report is not closed")?;
            let mut json = text[start..start + end].replace(r"<\/", "</");
            json.push('\n');
            (Format::Html, json)
        }
    };
    let raw: RawFile<'_> = serde_json::from_str(json.trim_end_matches('\n')).map_err(|error| {
        format!(
            "not a report: {error} (line {}, column {})",
            error.line(),
            error.column()
        )
    })?;
    let manifest: Manifest =
        serde_json::from_str(raw.manifest.get()).map_err(|error| format!("manifest: {error}"))?;
    Ok(ReadReport {
        format,
        report_bytes: raw.report.get().to_owned(),
        manifest_bytes: raw.manifest.get().to_owned(),
        manifest,
        manifest_sha256: raw.manifest_sha256,
        signature: raw.signature,
        json,
    })
}

/// What the file's own hashes and signature say.
#[derive(Debug, Default)]
pub struct Integrity {
    /// Problems found, each naming the member.
    pub problems: Vec<String>,
    /// The key that signed it, when the signature holds.
    pub signed_by: Option<String>,
}

/// Checks the report's hash against the manifest, the manifest's hash, and the signature.
pub fn integrity(file: &ReadReport) -> Integrity {
    let mut integrity = Integrity::default();
    let report_hash = sha256_hex(file.report_bytes.as_bytes());
    if report_hash != file.manifest.report_sha256 {
        integrity.problems.push(format!(
            "report: its SHA-256 is {report_hash}, the manifest says {}: the report was changed after it was signed",
            file.manifest.report_sha256
        ));
    }
    let manifest_hash = sha256_hex(file.manifest_bytes.as_bytes());
    if manifest_hash != file.manifest_sha256 {
        integrity.problems.push(format!(
            "manifest: its SHA-256 is {manifest_hash}, manifest_sha256 says {}",
            file.manifest_sha256
        ));
    }
    match &file.signature {
        None => integrity
            .problems
            .push("signature: the report is not signed".to_owned()),
        Some(signature) => match check_signature(signature, file.manifest_bytes.as_bytes()) {
            Ok(key) => integrity.signed_by = Some(super::signing::key_id(&key)),
            Err(problem) => integrity.problems.push(problem),
        },
    }
    integrity
}

/// Fields listed at most by [`differences`].
pub const DIFFERENCES_LISTED: usize = 20;

/// The fields where `found` (the file) and `expected` (made again) differ, as
/// `path: file has X, the ledger gives Y`; the first byte that differs when the values agree
/// and only the writing does.
pub fn differences(found: &str, expected: &str) -> Vec<String> {
    if found == expected {
        return Vec::new();
    }
    let mut listed = Vec::new();
    match (
        serde_json::from_str::<Value>(found),
        serde_json::from_str::<Value>(expected),
    ) {
        (Ok(found_value), Ok(expected_value)) => {
            walk(
                &found_value,
                &expected_value,
                &mut String::from("report"),
                &mut listed,
            );
        }
        (Err(error), _) => listed.push(format!(
            "report: not JSON at line {}, column {} ({error})",
            error.line(),
            error.column()
        )),
        (_, Err(error)) => listed.push(format!("the report made again is not JSON: {error}")),
    }
    if listed.is_empty() {
        let at = found
            .bytes()
            .zip(expected.bytes())
            .position(|(a, b)| a != b)
            .unwrap_or(found.len().min(expected.len()));
        listed.push(format!(
            "report: the same values written differently, from byte {at}: file {:?}, made again {:?}",
            snippet(found, at),
            snippet(expected, at)
        ));
    }
    listed
}

/// The largest char boundary of `text` at or below `at`.
fn boundary_below(text: &str, at: usize) -> usize {
    (0..=at.min(text.len()))
        .rev()
        .find(|index| text.is_char_boundary(*index))
        .unwrap_or(0)
}

fn snippet(text: &str, at: usize) -> String {
    let start = boundary_below(text, at.saturating_sub(20));
    let end = boundary_below(text, at + 20);
    text[start..end].to_owned()
}

fn short(value: &Value) -> String {
    let text = value.to_string();
    if text.len() > 80 {
        format!("{}…", &text[..boundary_below(&text, 80)])
    } else {
        text
    }
}

fn walk(found: &Value, expected: &Value, path: &mut String, listed: &mut Vec<String>) {
    if listed.len() >= DIFFERENCES_LISTED || found == expected {
        return;
    }
    match (found, expected) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for key in keys {
                let length = path.len();
                path.push('.');
                path.push_str(key);
                match (a.get(key), b.get(key)) {
                    (Some(x), Some(y)) => walk(x, y, path, listed),
                    (Some(x), None) => {
                        listed.push(format!(
                            "{path}: in the file ({}), not made again",
                            short(x)
                        ));
                    }
                    (None, Some(y)) => {
                        listed.push(format!(
                            "{path}: missing from the file (made again: {})",
                            short(y)
                        ));
                    }
                    (None, None) => {}
                }
                path.truncate(length);
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (index, (x, y)) in a.iter().zip(b).enumerate() {
                let length = path.len();
                path.push_str(&format!("[{index}]"));
                walk(x, y, path, listed);
                path.truncate(length);
            }
        }
        (Value::Array(a), Value::Array(b)) => listed.push(format!(
            "{path}: {} entries in the file, {} made again",
            a.len(),
            b.len()
        )),
        _ => listed.push(format!(
            "{path}: the file has {}, the ledger gives {}",
            short(found),
            short(expected)
        )),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever a file holds — random bytes, a zip header, a broken HTML report, a cut JSON
        /// one — reading it back is a value or an error, never a panic.
        #[test]
        fn reading_any_bytes_never_panics(
            bytes in prop::collection::vec(any::<u8>(), 0..512),
            prefix in prop::sample::select(vec![
                &b""[..],
                b"PK\x03\x04",
                b"{\"report\":",
                b"<html><script type=\"application/json\" id=\"footprint-report\">{",
            ]),
        ) {
            let mut file = prefix.to_vec();
            file.extend(&bytes);
            let _ = read(&file);
            let text = String::from_utf8_lossy(&file);
            let _ = differences(&text, "{\"a\":1}");
        }
    }

    #[test]
    fn differences_name_the_field() {
        let found = r#"{"a":{"b":[1,2]},"c":"x"}"#;
        let expected = r#"{"a":{"b":[1,3]},"c":"x"}"#;
        assert_eq!(
            differences(found, expected),
            vec!["report.a.b[1]: the file has 2, the ledger gives 3".to_owned()]
        );
        assert!(differences(found, found).is_empty());
        let written = differences(r#"{"a":1.50}"#, r#"{"a":1.5}"#);
        assert!(written[0].contains("written differently"), "{written:?}");
        let broken = differences(r#"{"a":1"#, r#"{"a":1}"#);
        assert!(broken[0].contains("not JSON"), "{broken:?}");
    }
}
