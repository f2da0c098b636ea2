//! The report for people: one self-contained HTML file (no script, font or request leaves it),
//! charts as inline SVG, readable on screen and printed. The signed JSON travels inside it, so
//! `footprint report verify` checks the HTML as it checks the JSON.

use std::fmt::Write as _;

use super::Report;
use super::figures::Field;
use super::figures::value_text;
use super::signing::SignedReport;
use super::svg::escape;
use super::verify::{HTML_SCRIPT_CLOSE, HTML_SCRIPT_OPEN};
use crate::Error;

/// Jobs listed in the HTML's annex; the JSON and CSV list every one.
pub const JOBS_LISTED: usize = 100;

const STYLE: &str = "body{font-family:sans-serif;margin:2em auto;max-width:1100px;padding:0 1em;color:#1d1d1d}\
h1{font-size:1.6em}h2{border-bottom:2px solid #2f6db5;padding-bottom:.2em;margin-top:2em}\
table{border-collapse:collapse;margin:.8em 0;font-size:.85em;width:100%}\
th,td{border:1px solid #cfcfcf;padding:.25em .5em;text-align:left;vertical-align:top;overflow-wrap:break-word}td:last-child{word-break:break-word}\
th{background:#eef3f9}td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}\
.notice{border:2px solid #b5482f;background:#fbeeea;padding:.6em 1em;margin:1em 0}\
.final{border:2px solid #5a9e6f;background:#edf6ef;padding:.6em 1em;margin:1em 0}\
.cards{display:flex;flex-wrap:wrap;gap:.8em}.card{border:1px solid #cfcfcf;padding:.5em .9em;min-width:9em}\
.card b{display:block;font-size:1.3em}.wide{overflow-x:auto}.wide table{font-size:.72em}.muted{color:#666;font-size:.85em}\
.charts{display:flex;flex-wrap:wrap;gap:0 1em}.charts svg{max-width:100%;height:auto;margin:.5em 0}\
@media print{body{margin:0;max-width:none}h2{break-after:avoid}table,svg{break-inside:avoid}}";

fn cell(text: &str) -> String {
    format!("<td>{}</td>", escape(text))
}

fn number_cell(text: &str) -> String {
    format!("<td class=\"n\">{}</td>", escape(text))
}

fn header(html: &mut String, columns: &[&str]) {
    html.push_str("<table><tr>");
    for column in columns {
        let _ = write!(html, "<th>{}</th>", escape(column));
    }
    html.push_str("</tr>");
}

fn field_value(field: &Field) -> String {
    if field.is_filled() {
        let value = value_text(&field.value);
        if field.unit.is_empty() {
            value
        } else {
            format!("{value} {}", field.unit)
        }
    } else {
        "—".to_owned()
    }
}

fn fields_table<'a>(html: &mut String, rows: impl IntoIterator<Item = (&'a str, &'a Field)>) {
    header(
        html,
        &["field", "value", "source", "method, or why it is empty"],
    );
    for (key, field) in rows {
        let source = serde_json::to_value(field.source)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let note = field.reason.clone().unwrap_or_else(|| field.method.clone());
        let value = field_value(field);
        let numeric = value.starts_with(|c: char| c.is_ascii_digit() || c == '-');
        let _ = write!(
            html,
            "<tr>{}{}{}{}</tr>",
            cell(key),
            if numeric {
                number_cell(&value)
            } else {
                cell(&value)
            },
            cell(&source),
            cell(&note)
        );
    }
    html.push_str("</table>");
}

fn groups(html: &mut String, title: &str, lines: &[super::annex::GroupLine]) {
    let _ = write!(html, "<h3>{}</h3>", escape(title));
    header(
        html,
        &[
            "",
            "jobs",
            "GPU-h",
            "kWh",
            "water L",
            "location kg",
            "market kg",
            "embodied kg",
        ],
    );
    for line in lines {
        let _ = write!(
            html,
            "<tr>{}{}{}{}{}{}{}{}</tr>",
            cell(if line.key.is_empty() {
                "(none)"
            } else {
                &line.key
            }),
            number_cell(&line.jobs.to_string()),
            number_cell(&line.gpu_hours.to_string()),
            number_cell(&line.energy_kwh.to_string()),
            number_cell(&line.water_l.to_string()),
            number_cell(&line.co2e_kg.location_based.to_string()),
            number_cell(&line.co2e_kg.market_based.to_string()),
            number_cell(&line.co2e_kg.embodied.to_string()),
        );
    }
    html.push_str("</table>");
}

fn optional(value: Option<super::canonical::Decimal>) -> String {
    value.map_or_else(|| "—".to_owned(), |v| v.to_string())
}

/// The HTML of `file`.
///
/// # Errors
/// None today; kept fallible like the other formats.
pub fn render(file: &SignedReport) -> Result<String, Error> {
    let report = &file.report;
    let site = report
        .facility
        .general
        .name
        .value
        .as_str()
        .unwrap_or("Data centre")
        .to_owned();
    let mut html = String::new();
    let _ = write!(
        html,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\"><title>{} — disclosure report {} to {}</title><style>{STYLE}</style></head><body>",
        escape(&site),
        escape(&report.period.from),
        escape(&report.period.to)
    );
    let _ = write!(
        html,
        "<h1>{} — energy and sustainability disclosure</h1><p>Period {} to {} ({} hours). {}</p>",
        escape(&site),
        escape(&report.period.from),
        escape(&report.period.to),
        report.period.hours,
        escape(report.rules.regulation)
    );
    if report.period.notice.is_empty() {
        html.push_str(
            "<div class=\"final\">Every hour of the period is settled; no hour was revised.</div>",
        );
    } else {
        let _ = write!(
            html,
            "<div class=\"notice\"><b>{}:</b> {}</div>",
            escape(report.period.status),
            escape(&report.period.notice)
        );
    }
    let kpis = &report.facility.kpis;
    let indicators = &report.facility.indicators;
    html.push_str("<div class=\"cards\">");
    for (label, field) in [
        ("EDC", kpis.get("edc")),
        ("EIT", kpis.get("eit")),
        ("PUE", indicators.get("pue")),
        ("WUE", indicators.get("wue")),
        ("CO2e location-based", Some(&report.carbon.location_based)),
        ("CO2e market-based", Some(&report.carbon.market_based)),
    ] {
        let value = field.map_or_else(|| "—".to_owned(), field_value);
        let _ = write!(
            html,
            "<div class=\"card\">{}<b>{}</b></div>",
            escape(label),
            escape(&value)
        );
    }
    let _ = write!(
        html,
        "<div class=\"card\">jobs<b>{}</b></div></div>",
        report.jobs.len()
    );
    html.push_str(&super::charts::charts(report));

    html.push_str("<h2>General information (Annex I)</h2>");
    let general = serde_json::to_value(&report.facility.general).unwrap_or_default();
    let general: Vec<(String, Field)> = general
        .as_object()
        .map(|map| {
            map.iter()
                .filter_map(|(key, value)| Some((key.clone(), general_field(value)?)))
                .collect()
        })
        .unwrap_or_default();
    fields_table(
        &mut html,
        general.iter().map(|(key, field)| (key.as_str(), field)),
    );
    html.push_str("<h2>Energy and sustainability KPIs (Annex II.1)</h2>");
    fields_table(&mut html, kpis.iter().map(|(key, field)| (*key, field)));
    html.push_str("<h2>ICT capacity and data traffic (Annex II.2, II.3)</h2>");
    fields_table(
        &mut html,
        report
            .facility
            .ict_capacity
            .iter()
            .chain(&report.facility.data_traffic)
            .map(|(key, field)| (*key, field)),
    );
    html.push_str("<h2>Indicators (Annex III)</h2>");
    fields_table(
        &mut html,
        indicators.iter().map(|(key, field)| (*key, field)),
    );

    html.push_str("<h2>Carbon (GHG Protocol Scope 2, dual reporting)</h2>");
    let carbon = &report.carbon;
    fields_table(
        &mut html,
        [
            ("location-based", &carbon.location_based),
            ("market-based", &carbon.market_based),
            ("embodied", &carbon.embodied),
            ("annual matching", &carbon.annual_matching),
            ("hourly matching (24/7 CFE)", &carbon.hourly_matching_cfe),
        ]
        .into_iter()
        .chain(carbon.instruments.iter().map(|(key, field)| (*key, field))),
    );
    let _ = write!(
        html,
        "<p class=\"muted\">Zone {}; hours priced with a measured / interpolated / estimated / missing intensity: {}</p>",
        escape(&carbon.zone),
        carbon
            .intensity_hours
            .iter()
            .map(|(key, hours)| format!("{key} {hours}"))
            .collect::<Vec<_>>()
            .join(", ")
    );

    if !carbon.sci.is_empty() {
        html.push_str("<h3>SCI per functional unit</h3>");
        header(
            &mut html,
            &[
                "model",
                "functional unit",
                "jobs",
                "units",
                "SCI g CO2e / unit",
                "Wh / unit",
            ],
        );
        for line in &carbon.sci {
            let _ = write!(
                html,
                "<tr>{}{}{}{}{}{}</tr>",
                cell(&line.model),
                cell(&line.functional_unit),
                number_cell(&line.jobs.to_string()),
                number_cell(&line.functional_units.to_string()),
                number_cell(&optional(line.sci_g_per_unit)),
                number_cell(&optional(line.energy_wh_per_unit)),
            );
        }
        html.push_str("</table><p class=\"muted\">SCI 1.1: (E × I + M) per R, E with each job's share of the facility overhead, I location-based (no market instruments).</p>");
    }
    html.push_str("<h3>Factor tables and feeds</h3>");
    header(&mut html, &["table", "version", "SHA-256", "source"]);
    for table in &carbon.factor_tables {
        let _ = write!(
            html,
            "<tr>{}{}{}{}</tr>",
            cell(&table.name),
            cell(&table.version),
            cell(&table.sha256),
            cell(&table.source)
        );
    }
    for feed in &carbon.intensity_feeds {
        let _ = write!(
            html,
            "<tr>{}{}{}{}</tr>",
            cell(&format!("grid intensity feed {}", feed.file)),
            cell(&format!("{}, hour-{}", feed.layout, feed.hour_convention)),
            cell(&feed.sha256),
            cell("imported feed")
        );
    }
    html.push_str("</table>");

    html.push_str("<h2>Months</h2>");
    header(
        &mut html,
        &[
            "month",
            "facility kWh",
            "IT kWh",
            "jobs kWh",
            "idle kWh",
            "unattributed kWh",
            "water L",
            "PUE",
            "WUE",
            "location kg",
            "market kg",
            "embodied kg",
        ],
    );
    for month in &report.months {
        let _ = write!(
            html,
            "<tr>{}{}{}{}{}{}{}{}{}{}{}{}</tr>",
            cell(&month.month),
            number_cell(&month.facility_kwh.to_string()),
            number_cell(&month.it_kwh.to_string()),
            number_cell(&month.jobs_kwh.to_string()),
            number_cell(&month.idle_kwh.to_string()),
            number_cell(&month.unattributed_kwh.to_string()),
            number_cell(&month.water_l.to_string()),
            number_cell(&optional(month.pue)),
            number_cell(&optional(month.wue_l_per_kwh)),
            number_cell(&month.co2e_location_kg.to_string()),
            number_cell(&month.co2e_market_kg.to_string()),
            number_cell(&month.co2e_embodied_kg.to_string()),
        );
    }
    html.push_str("</table>");

    html.push_str("<h2>Conservation</h2><p>Every quantity: jobs + idle + unattributed = the facility's, exactly, in the ledger's integer units; the annex's jobs add up to the jobs' share.</p>");
    header(
        &mut html,
        &[
            "quantity",
            "unit",
            "site",
            "jobs",
            "idle",
            "unattributed",
            "Σ annex",
            "imbalance",
            "balanced",
        ],
    );
    for (quantity, line) in &report.conservation {
        let _ = write!(
            html,
            "<tr>{}{}{}{}{}{}{}{}{}</tr>",
            cell(quantity),
            cell(line.unit),
            number_cell(&line.site.to_string()),
            number_cell(&line.jobs.to_string()),
            number_cell(&line.idle.to_string()),
            number_cell(&line.unattributed.to_string()),
            number_cell(&line.jobs_in_annex.to_string()),
            number_cell(&line.imbalance.to_string()),
            cell(if line.balanced { "yes" } else { "NO" }),
        );
    }
    html.push_str("</table>");

    html.push_str("<h2>Per-job annex</h2>");
    let _ = write!(
        html,
        "<p class=\"muted\">{} jobs; the {} with the most energy are listed here, every job in the JSON and CSV. Energy includes each job's share of the facility overhead; SCI = (location-based + embodied) / functional unit.</p>",
        report.jobs.len(),
        report.jobs.len().min(JOBS_LISTED)
    );
    html.push_str("<div class=\"wide\">");
    header(
        &mut html,
        &[
            "job",
            "user / project",
            "kind",
            "model",
            "start",
            "end",
            "GPU-h",
            "kWh",
            "water L",
            "location kg",
            "market kg",
            "embodied kg",
            "SCI g/unit",
            "measured",
        ],
    );
    for job in report.jobs.iter().take(JOBS_LISTED) {
        let sci = job.sci_g_per_unit.map_or_else(
            || "—".to_owned(),
            |sci| format!("{sci} / {}", job.functional_unit),
        );
        let _ = write!(
            html,
            "<tr>{}{}{}{}{}{}{}{}{}{}{}{}{}{}</tr>",
            cell(&job.id),
            cell(&format!("{} / {}", job.user, job.project)),
            cell(&job.kind),
            cell(&job.model),
            cell(&job.start),
            cell(&job.end),
            number_cell(&job.gpu_hours.to_string()),
            number_cell(&job.energy_kwh.total.to_string()),
            number_cell(&job.water_l.to_string()),
            number_cell(&job.co2e_kg.location_based.to_string()),
            number_cell(&job.co2e_kg.market_based.to_string()),
            number_cell(&job.co2e_kg.embodied.to_string()),
            number_cell(&sci),
            number_cell(&optional(job.energy_quality.measured)),
        );
    }
    html.push_str("</table></div>");
    groups(&mut html, "Totals per model", &report.totals.by_model);
    groups(&mut html, "Totals per project", &report.totals.by_project);
    groups(&mut html, "Totals per user", &report.totals.by_user);

    data_quality(&mut html, report);
    trust(&mut html, file);
    let _ = writeln!(
        html,
        "{HTML_SCRIPT_OPEN}{}{HTML_SCRIPT_CLOSE}</body></html>",
        file.json.trim_end().replace("</", r"<\/")
    );
    Ok(html)
}

fn general_field(value: &serde_json::Value) -> Option<Field> {
    #[derive(serde::Deserialize)]
    struct Read {
        value: serde_json::Value,
        method: String,
        reason: Option<String>,
    }
    let read: Read = serde_json::from_value(value.clone()).ok()?;
    let source = if read.value.is_null() {
        super::figures::Source::Missing
    } else {
        super::figures::Source::Configured
    };
    Some(Field {
        value: read.value,
        unit: "",
        source,
        method: read.method,
        exact: None,
        reason: read.reason,
    })
}

fn data_quality(html: &mut String, report: &Report) {
    let quality = &report.data_quality;
    html.push_str("<h2>Data quality</h2>");
    let _ = write!(
        html,
        "<p>Shares: {}. Site windows by facility energy source: {}. Readings further apart than {} s are gaps: their energy is exact (counters), its placement in time interpolated.</p>",
        quality
            .shares
            .iter()
            .map(|(key, value)| format!("{key} {}", optional(*value)))
            .collect::<Vec<_>>()
            .join(", "),
        quality
            .facility_energy_windows
            .iter()
            .map(|(key, value)| format!("{key} {value}"))
            .collect::<Vec<_>>()
            .join(", "),
        quality.max_sample_gap_s
    );
    header(
        html,
        &[
            "host", "meter", "kind", "readings", "coverage", "gaps", "wraps", "resets", "first",
            "last",
        ],
    );
    for meter in &quality.meters {
        let _ = write!(
            html,
            "<tr>{}{}{}{}{}{}{}{}{}{}</tr>",
            cell(&meter.host),
            cell(&meter.meter),
            cell(&meter.kind),
            number_cell(&meter.readings.to_string()),
            number_cell(&optional(meter.coverage)),
            number_cell(&meter.gaps.to_string()),
            number_cell(&meter.wraps.to_string()),
            number_cell(&meter.resets.to_string()),
            cell(meter.first_reading.as_deref().unwrap_or("—")),
            cell(meter.last_reading.as_deref().unwrap_or("—")),
        );
    }
    html.push_str("</table>");
    let _ = write!(
        html,
        "<p>Readings refused at ingest: {}.</p>",
        quality.rejected_readings
    );
    if !quality.rejected.is_empty() {
        header(html, &["field", "reason", "readings"]);
        for line in &quality.rejected {
            let _ = write!(
                html,
                "<tr>{}{}{}</tr>",
                cell(&line.field),
                cell(&line.reason),
                number_cell(&line.readings.to_string())
            );
        }
        html.push_str("</table>");
    }
    let _ = write!(
        html,
        "<p>Hours settled again after late data changed their figures: {}; hours reopened and not settled again: {}.</p>",
        quality.revised_hours.len(),
        quality.reopened_hours.len()
    );
    if !quality.revised_hours.is_empty() || !quality.reopened_hours.is_empty() {
        header(html, &["hour", "state", "revisions", "why"]);
        for (state, lines) in [
            ("revised", &quality.revised_hours),
            ("reopened", &quality.reopened_hours),
        ] {
            for line in lines.iter().take(200) {
                let _ = write!(
                    html,
                    "<tr>{}{}{}{}</tr>",
                    cell(&line.hour),
                    cell(state),
                    number_cell(&line.revisions.to_string()),
                    cell(&line.reason)
                );
            }
        }
        html.push_str("</table>");
    }
}

fn trust(html: &mut String, file: &SignedReport) {
    let manifest = &file.manifest;
    html.push_str("<h2>Manifest and signature</h2>");
    header(html, &["", ""]);
    let signature = file.signature.as_ref().map_or_else(
        || "not signed".to_owned(),
        |signature| format!("{} by key {}", signature.algorithm, signature.key_id),
    );
    for (key, value) in [
        ("software", manifest.software.clone()),
        ("report SHA-256", manifest.report_sha256.clone()),
        ("config SHA-256", manifest.config_sha256.clone()),
        ("signature", signature),
        ("meters", manifest.meters.len().to_string()),
        (
            "ledger",
            manifest
                .ledger
                .iter()
                .map(|line| {
                    format!(
                        "{} seq {}–{}",
                        line.collector, line.first_seq, line.last_seq
                    )
                })
                .collect::<Vec<_>>()
                .join("; "),
        ),
        (
            "factor tables",
            manifest
                .factor_tables
                .iter()
                .map(|table| {
                    format!(
                        "{} {} ({})",
                        table.name,
                        table.version,
                        &table.sha256[..table.sha256.len().min(12)]
                    )
                })
                .collect::<Vec<_>>()
                .join("; "),
        ),
        (
            "intensity feeds",
            manifest
                .intensity_feeds
                .iter()
                .map(|feed| {
                    format!(
                        "{} ({})",
                        feed.file,
                        &feed.sha256[..feed.sha256.len().min(12)]
                    )
                })
                .collect::<Vec<_>>()
                .join("; "),
        ),
    ] {
        let _ = write!(html, "<tr>{}{}</tr>", cell(key), cell(&value));
    }
    html.push_str("</table><p class=\"muted\">The signed JSON report is embedded in this file: <code>footprint report verify</code> checks its signature and makes it again from the ledger.</p>");
}
