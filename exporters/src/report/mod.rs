//! The disclosure report: the EU data-centre KPIs (Delegated Regulation (EU) 2024/1364), dual
//! carbon, a per-job annex and the data behind its quality — made from the ledger alone, in
//! canonical JSON ([`canonical`]), with a manifest of its inputs and an Ed25519 signature
//! ([`signing`]), rendered for people as HTML ([`html`]) and for spreadsheets as CSV ([`csv`]).
//!
//! The same ledger and period always give the same bytes, so `footprint report verify` can make
//! the report again and compare ([`verify`]).

pub mod annex;
pub mod canonical;
pub mod carbon;
pub mod charts;
pub mod csv;
pub mod disclosure;
pub mod facility;
pub mod figures;
pub mod html;
pub mod inputs;
pub mod quality;
pub mod signing;
pub mod svg;
pub mod verify;

use std::collections::BTreeMap;

use footprint_core::UnixNanos;
use footprint_core::time::format_rfc3339;
use footprint_core::units::NANOS_PER_HOUR;
use serde::Serialize;

pub use disclosure::DisclosureConfig;
pub use inputs::ReportInputs;

/// The report's schema; a change of rule is a new version, not an edit.
pub const SCHEMA_VERSION: &str = "footprint-disclosure/1";

/// The period and how final its figures are.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Period {
    pub from: String,
    pub to: String,
    pub hours: i64,
    pub settled_hours: i64,
    /// Hours not settled yet (or reopened by late data): their figures may still change.
    pub unsettled_hours: i64,
    /// Hours before the ledger's first settled hour: Footprint holds nothing for them.
    pub hours_before_ledger: i64,
    pub revised_hours: i64,
    /// `final` when every hour of the period is settled, else `provisional`.
    pub status: &'static str,
    /// What a reader must know first; empty for a final period without revisions.
    pub notice: String,
}

/// The rules the report follows, by version.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Rules {
    pub regulation: &'static str,
    pub annex_tables: &'static str,
    pub carbon: &'static str,
    pub sci: &'static str,
    pub water: &'static str,
}

/// The attribution policy and the methods behind every figure.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Methods {
    pub attribution_policy: String,
    pub host_overhead_factor: String,
    pub window_seconds: i64,
    pub job_figures: String,
}

/// The report's body: what is signed (through the manifest's hash of it) and re-derived.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    pub schema_version: &'static str,
    pub rules: Rules,
    pub period: Period,
    pub facility: facility::Facility,
    pub carbon: carbon::Carbon,
    pub months: Vec<carbon::Month>,
    pub trend: carbon::Trend,
    pub jobs: Vec<annex::JobLine>,
    pub totals: annex::Totals,
    pub conservation: BTreeMap<&'static str, annex::ConservationLine>,
    pub data_quality: quality::DataQuality,
    pub methods: Methods,
}

/// What a report needs besides the ledger's figures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Context {
    pub window_ns: i64,
    /// The job method note every job figure carries.
    pub job_method: String,
}

fn period(inputs: &ReportInputs) -> Period {
    let hours = (inputs.to_ns - inputs.from_ns) / NANOS_PER_HOUR;
    let before = match inputs.ledger_settled {
        Some((first, _)) => ((first.min(inputs.to_ns) - inputs.from_ns).max(0)) / NANOS_PER_HOUR,
        None => hours,
    };
    let unsettled = (hours - inputs.settled_hours - before).max(0);
    let revised = inputs.revised_hours.len() as i64;
    let mut notice = Vec::new();
    if unsettled > 0 {
        notice.push(format!(
            "{unsettled} of the period's {hours} hours are not settled yet: their figures may still change"
        ));
    }
    if !inputs.reopened_hours.is_empty() {
        notice.push(format!(
            "{} settled hours were reopened by late data and wait to be settled again",
            inputs.reopened_hours.len()
        ));
    }
    if before > 0 {
        notice.push(format!(
            "{before} hours of the period precede the ledger's first settled hour: Footprint holds no data for them"
        ));
    }
    if revised > 0 {
        notice.push(format!(
            "{revised} hours were settled again after late data changed them (data_quality.revised_hours says why)"
        ));
    }
    Period {
        from: format_rfc3339(UnixNanos(inputs.from_ns)),
        to: format_rfc3339(UnixNanos(inputs.to_ns)),
        hours,
        settled_hours: inputs.settled_hours,
        unsettled_hours: unsettled,
        hours_before_ledger: before,
        revised_hours: revised,
        status: if unsettled == 0 && inputs.reopened_hours.is_empty() {
            "final"
        } else {
            "provisional"
        },
        notice: notice.join("; "),
    }
}

/// The report of `inputs`.
pub fn build(inputs: &ReportInputs, context: &Context) -> Report {
    Report {
        schema_version: SCHEMA_VERSION,
        rules: Rules {
            regulation: "Directive (EU) 2023/1791 Art. 12; Delegated Regulation (EU) 2024/1364",
            annex_tables: "2024/1364 Annexes I-III as adopted (first reporting phase)",
            carbon: "GHG Protocol Scope 2 Guidance (2015): location- and market-based",
            sci: "Green Software Foundation SCI 1.1 (ISO/IEC 21031:2024)",
            water: "ISO/IEC 30134-9 WUE = WIN / EIT",
        },
        period: period(inputs),
        facility: facility::facility(inputs),
        carbon: carbon::carbon(inputs),
        months: carbon::months(inputs),
        trend: carbon::trend(inputs),
        jobs: annex::jobs(inputs, context.window_ns),
        totals: annex::totals(inputs),
        conservation: annex::conservation(inputs),
        data_quality: quality::data_quality(inputs),
        methods: Methods {
            attribution_policy: inputs.attribution_policy.clone(),
            host_overhead_factor: inputs.host_overhead_factor.clone(),
            window_seconds: context.window_ns / footprint_core::units::NANOS_PER_SECOND,
            job_figures: context.job_method.clone(),
        },
    }
}

/// The report's formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Csv,
    Html,
}

impl Format {
    /// `json`, `csv` or `html`.
    ///
    /// # Errors
    /// Another word, named.
    pub fn parse(text: &str) -> Result<Self, crate::Error> {
        match text {
            "json" | "" => Ok(Self::Json),
            "csv" => Ok(Self::Csv),
            "html" => Ok(Self::Html),
            other => Err(crate::Error::Report(format!(
                "format: {other:?} is not one of json, csv, html"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Csv => "csv",
            Self::Html => "html",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Json => "application/json",
            Self::Csv => "application/zip",
            Self::Html => "text/html; charset=utf-8",
        }
    }
}

/// `file` (the signed JSON) in `format`.
///
/// # Errors
/// The CSV archive could not be written.
pub fn render(file: &signing::SignedReport, format: Format) -> Result<Vec<u8>, crate::Error> {
    match format {
        Format::Json => Ok(file.json.clone().into_bytes()),
        Format::Html => Ok(html::render(file)?.into_bytes()),
        Format::Csv => csv::render(file),
    }
}
