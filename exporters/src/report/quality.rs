//! The data-quality section: how much of the period each meter covered, its gaps, wraps and
//! resets; how the energy was obtained; what was refused; which hours were revised and why.

use std::collections::BTreeMap;

use footprint_core::UnixNanos;
use footprint_core::time::format_rfc3339;
use serde::Serialize;

use super::canonical::Decimal;
use super::figures::share;
use super::inputs::ReportInputs;

/// Gaps listed per meter at most; `gaps` counts them all.
pub const GAPS_LISTED: usize = 50;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Gap {
    pub from: String,
    pub to: String,
    pub hours: Decimal,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MeterLine {
    pub host: String,
    pub meter: String,
    pub kind: String,
    pub method: String,
    pub readings: i64,
    /// Share of the period covered by readings at most `max_sample_gap_s` apart.
    pub coverage: Option<Decimal>,
    pub first_reading: Option<String>,
    pub last_reading: Option<String>,
    pub gaps: i64,
    pub gaps_listed: Vec<Gap>,
    pub wraps: i64,
    pub resets: i64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HourLine {
    pub hour: String,
    pub revisions: i64,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RejectedLine {
    pub field: String,
    pub reason: String,
    pub readings: i64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DataQuality {
    pub max_sample_gap_s: i64,
    pub meters: Vec<MeterLine>,
    /// Shares of the hosts' energy measured / interpolated / estimated, and of the facility's
    /// energy left unattributed.
    pub shares: BTreeMap<&'static str, Option<Decimal>>,
    /// Site windows by where their facility energy came from.
    pub facility_energy_windows: BTreeMap<&'static str, i64>,
    pub rejected: Vec<RejectedLine>,
    pub rejected_readings: i64,
    /// Settled hours settled again with different figures after late data, and why. (Host
    /// windows rebuilt before their hour settled changed no settled figure and are not listed.)
    pub revised_hours: Vec<HourLine>,
    /// Hours reopened by late data and not settled again yet: their figures will change.
    pub reopened_hours: Vec<HourLine>,
}

fn at(ns: i64) -> String {
    format_rfc3339(UnixNanos(ns))
}

fn hour_lines(hours: &[super::inputs::RevisedHour]) -> Vec<HourLine> {
    hours
        .iter()
        .map(|hour| HourLine {
            hour: at(hour.hour_ns),
            revisions: hour.revisions,
            reason: hour.reason.clone(),
        })
        .collect()
}

pub fn data_quality(inputs: &ReportInputs) -> DataQuality {
    let period_ns = inputs.to_ns - inputs.from_ns;
    let meters = inputs
        .meters
        .iter()
        .map(|meter| MeterLine {
            host: meter.host.clone(),
            meter: meter.meter_id.clone(),
            kind: meter.kind.clone(),
            method: meter.method.clone(),
            readings: meter.readings,
            coverage: share(meter.covered_ns, period_ns),
            first_reading: meter.first_reading_ns.map(at),
            last_reading: meter.last_reading_ns.map(at),
            gaps: meter.gaps.len() as i64,
            gaps_listed: meter
                .gaps
                .iter()
                .take(GAPS_LISTED)
                .map(|&(from, to)| Gap {
                    from: at(from),
                    to: at(to),
                    hours: Decimal::ratio(
                        i128::from(to - from),
                        i128::from(footprint_core::units::NANOS_PER_HOUR),
                        3,
                    )
                    .unwrap_or(Decimal::whole(0)),
                })
                .collect(),
            wraps: meter.wraps,
            resets: meter.resets,
        })
        .collect();
    let total = &inputs.total;
    let it = total.it_mj;
    DataQuality {
        max_sample_gap_s: inputs.max_sample_gap_s,
        meters,
        shares: BTreeMap::from([
            ("it_measured", share(total.it_measured_mj, it)),
            ("it_interpolated", share(total.it_interpolated_mj, it)),
            ("it_estimated", share(total.it_estimated_mj, it)),
            (
                "facility_unattributed",
                share(total.energy_mj.unattributed, total.energy_mj.site),
            ),
            (
                "facility_idle",
                share(total.energy_mj.idle, total.energy_mj.site),
            ),
        ]),
        facility_energy_windows: BTreeMap::from([
            ("site_metered", total.windows_site_metered),
            ("it_only", total.windows_it_only),
            ("assumed_pue", total.windows_assumed_pue),
        ]),
        rejected: inputs
            .rejected
            .iter()
            .map(|rejected| RejectedLine {
                field: rejected.field.clone(),
                reason: rejected.reason.clone(),
                readings: rejected.readings,
            })
            .collect(),
        rejected_readings: inputs.rejected.iter().map(|r| r.readings).sum(),
        revised_hours: hour_lines(&inputs.revised_hours),
        reopened_hours: hour_lines(&inputs.reopened_hours),
    }
}
