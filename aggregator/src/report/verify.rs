//! `footprint report verify`: a report file checked against the ledger — its hashes and
//! signature, the ledger it was made from, the report made again byte for byte, and the period's
//! hours rebuilt from the readings.

use std::path::Path;

use footprint_exporters::report::inputs::CollectorRange;
use footprint_exporters::report::signing;
use footprint_exporters::report::verify as check;
use rusqlite::Connection;

use super::{build, period_of, render, report_inputs, stored_config};
use crate::ledger;
use crate::tables::schema;
use crate::{Error, Result};

/// What `footprint report verify` found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verification {
    /// The file's format: `json`, `csv` or `html`.
    pub format: String,
    /// The key whose signature holds.
    pub signed_by: Option<String>,
    /// The period the file states.
    pub period: String,
    /// Everything that fails, each naming the field or member; empty when the report holds.
    pub problems: Vec<String>,
    /// What a reader should know though it is not a failure.
    pub notes: Vec<String>,
}

impl Verification {
    pub fn holds(&self) -> bool {
        self.problems.is_empty()
    }
}

/// How far `verify` goes.
#[derive(Clone, Debug, Default)]
pub struct VerifyOptions {
    /// The key the report must be signed with; `None`: any key, named.
    pub expected_key: Option<signing::VerifyingKey>,
    /// Also rebuild every settled hour of the period from the readings and compare with the
    /// roll-ups the report was made from (as long as building the ledger took).
    pub readings: bool,
}

/// Checks the report in `bytes` (any format): its hashes and signature, that it was made from
/// this ledger, that made again from the ledger at `path` it is the same, byte for byte (naming
/// each field that differs), and with `options.readings` that the ledger's figures follow from
/// its readings. `progress` hears of each hour rebuilt, out of how many.
///
/// # Errors
/// The file is not a report, or the ledger cannot be read.
pub fn verify(
    path: &Path,
    bytes: &[u8],
    options: &VerifyOptions,
    progress: impl FnMut(u64, u64),
) -> Result<Verification> {
    let expected_key = options.expected_key.as_ref();
    let file = check::read(bytes).map_err(Error::BadRequest)?;
    let mut verification = Verification {
        format: file.format.name().to_owned(),
        period: format!(
            "{} to {}",
            file.manifest.period_from, file.manifest.period_to
        ),
        ..Verification::default()
    };
    let integrity = check::integrity(&file);
    verification.problems.extend(integrity.problems);
    verification.signed_by = integrity.signed_by.clone();
    if let Some(expected) = expected_key {
        let expected_id = signing::key_id(expected);
        if integrity.signed_by.as_deref() != Some(expected_id.as_str()) {
            verification.problems.push(format!(
                "signature: not made by the expected key {expected_id} (the file's key: {})",
                file.signature
                    .as_ref()
                    .map_or("none", |signature| signature.key_id.as_str())
            ));
        }
    }

    let connection = schema::open_reader(path)?;
    let config = stored_config(&connection)?;
    let ledger_lines = ledger_lines(&connection)?;
    let foreign = another_ledger(&file.manifest.ledger, &ledger_lines);
    if let Some(reason) = &foreign {
        verification.problems.push(format!(
            "ledger: this report was made from another ledger (or a later copy of this one): {reason}"
        ));
        return Ok(verification);
    }
    let parse = |name: &str, text: &str| {
        footprint_core::time::parse_rfc3339(text)
            .map(|at| at.0)
            .map_err(|error| Error::BadRequest(format!("manifest.{name}: {error}")))
    };
    let span = period_of(
        &connection,
        parse("period_from", &file.manifest.period_from)?,
        parse("period_to", &file.manifest.period_to)?,
    )?;
    let inputs = report_inputs(&connection, &config, span)?;
    let body = build(&inputs, &config);
    let again = footprint_exporters::report::canonical::canonical_of(&body)
        .map_err(|error| Error::Server(error.to_string()))?;
    let differences = check::differences(&file.report_bytes, &again);
    if !differences.is_empty() {
        verification.problems.push(format!(
            "report: made again from this ledger it differs in {} field(s){}:",
            differences.len(),
            if differences.len() >= check::DIFFERENCES_LISTED {
                " or more"
            } else {
                ""
            }
        ));
        verification
            .problems
            .extend(differences.into_iter().map(|line| format!("  {line}")));
    }
    let manifest = signing::manifest(&inputs, signing::sha256_hex(again.as_bytes()));
    manifest_differences(&file.manifest, &manifest, &mut verification);
    if options.readings {
        let settings = crate::settings::LedgerSettings::from_config(&config)?;
        let window = footprint_core::window::WindowLength::from_seconds(config.window_seconds)
            .unwrap_or_default();
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        let recheck = ledger::recheck::recheck(path, &settings, window, span, threads, progress)?;
        if recheck.rows_differing > 0 {
            verification.problems.push(format!(
                "readings: {} roll-up row(s) differ from what the readings give (rebuilt {} hours):",
                recheck.rows_differing, recheck.hours
            ));
            verification.problems.extend(
                recheck
                    .differences
                    .into_iter()
                    .map(|line| format!("  {line}")),
            );
        } else {
            verification.notes.push(format!(
                "readings: {} settled hours rebuilt from the readings; every roll-up matches",
                recheck.hours
            ));
        }
    } else {
        verification.notes.push(
            "readings: not rebuilt (--figures-only): the report was checked against the ledger's settled figures only".into(),
        );
    }
    if verification.problems.is_empty() {
        // The body and manifest hold: the file itself must be what this build writes of them.
        let rebuilt = signing::assemble(body, file.manifest.clone(), file.signature.clone())
            .map_err(|error| Error::Server(error.to_string()))?;
        let rendered = render(&rebuilt, file.format)?;
        if rendered != bytes {
            let at = rendered
                .iter()
                .zip(bytes)
                .position(|(a, b)| a != b)
                .unwrap_or(rendered.len().min(bytes.len()));
            verification.problems.push(format!(
                "file: the {} differs from what this build writes of the same report, from byte {at}",
                file.format.name()
            ));
        }
    }
    Ok(verification)
}

fn ledger_lines(connection: &Connection) -> Result<Vec<CollectorRange>> {
    Ok(connection
        .prepare(
            "SELECT c.name, c.host, COALESCE((SELECT MAX(seq) FROM batches b WHERE b.collector = c.id), 0)
             FROM collectors c",
        )?
        .query_map([], |row| {
            Ok(CollectorRange {
                collector: row.get(0)?,
                host: row.get(1)?,
                first_seq: 0,
                last_seq: row.get(2)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?)
}

/// Why the report's ledger is not this one (or an extension of it), if it is not.
fn another_ledger(seen: &[signing::CollectorLine], here: &[CollectorRange]) -> Option<String> {
    let missing: Vec<&str> = seen
        .iter()
        .filter(|line| !here.iter().any(|h| h.collector == line.collector))
        .map(|line| line.collector.as_str())
        .collect();
    if !missing.is_empty() {
        return Some(format!(
            "it saw collector(s) {} that this ledger never heard from",
            missing.join(", ")
        ));
    }
    seen.iter().find_map(|line| {
        let here = here.iter().find(|h| h.collector == line.collector)?;
        (here.last_seq < line.last_seq || here.host != line.host).then(|| {
            format!(
                "collector {} ({}) had sent up to batch {} when it was made; this ledger holds it ({}) up to {}",
                line.collector, line.host, line.last_seq, here.host, here.last_seq
            )
        })
    })
}

fn manifest_differences(
    found: &signing::Manifest,
    expected: &signing::Manifest,
    verification: &mut Verification,
) {
    if found.software != expected.software {
        verification.notes.push(format!(
            "manifest.software: made by {}, verified by {}",
            found.software, expected.software
        ));
    }
    if found.config_sha256 != expected.config_sha256 {
        verification.problems.push(format!(
            "manifest.config_sha256: made with config {}, the ledger now holds config {} (the aggregator restarted with another config since)",
            found.config_sha256, expected.config_sha256
        ));
    }
    let pairs = [
        (
            "schema_version",
            serde_json::json!(found.schema_version),
            serde_json::json!(expected.schema_version),
        ),
        (
            "site",
            serde_json::json!(found.site),
            serde_json::json!(expected.site),
        ),
        (
            "meters",
            serde_json::json!(found.meters),
            serde_json::json!(expected.meters),
        ),
        (
            "factor_tables",
            serde_json::json!(found.factor_tables),
            serde_json::json!(expected.factor_tables),
        ),
        (
            "intensity_feeds",
            serde_json::json!(found.intensity_feeds),
            serde_json::json!(expected.intensity_feeds),
        ),
    ];
    for (name, found, expected) in pairs {
        if found != expected {
            verification.problems.push(format!(
                "manifest.{name}: the file has {found}, the ledger gives {expected}"
            ));
        }
    }
    if verification.signed_by.is_some()
        && found
            .ledger
            .iter()
            .zip(&expected.ledger)
            .any(|(a, b)| a.last_seq < b.last_seq)
    {
        verification.notes.push(
            "ledger: batches arrived after the report was made; the period's figures are unchanged"
                .into(),
        );
    }
}
