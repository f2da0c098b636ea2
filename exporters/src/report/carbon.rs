//! The carbon section (GHG Protocol Scope 2 dual reporting, hourly matching, embodied carbon,
//! SCI, the factor tables), and the facility month by month and in steps to draw.

use std::collections::BTreeMap;

use serde::Serialize;

use super::canonical::Decimal;
use super::figures::{Field, Source, kilograms, kwh, share};
use super::inputs::{FacilityFigures, ReportInputs};
use super::signing::{FactorTableLine, FeedLine, factor_table_lines, feed_lines};

/// The carbon section.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Carbon {
    pub location_based: Field,
    pub market_based: Field,
    pub embodied: Field,
    /// (PPA supply delivered + guarantees of origin used) / facility energy, capped at 1.
    pub annual_matching: Field,
    /// PPA supply matched by the load of the same hour / facility energy (the 24/7 CFE score).
    pub hourly_matching_cfe: Field,
    pub instruments: BTreeMap<&'static str, Field>,
    /// Hours of the period by how the grid intensity that priced them was obtained.
    pub intensity_hours: BTreeMap<&'static str, i64>,
    pub zone: String,
    /// SCI per functional unit, by model and unit (jobs without units left out).
    pub sci: Vec<super::annex::SciLine>,
    /// The factor tables and contracts the figures were computed with, and the intensity feeds
    /// (also in the manifest, with the rest of the report's inputs).
    pub factor_tables: Vec<FactorTableLine>,
    pub intensity_feeds: Vec<FeedLine>,
}

pub fn carbon(inputs: &ReportInputs) -> Carbon {
    let total = &inputs.total;
    let mass = |mg: i64, source: Source, method: String| {
        Field::filled(kilograms(mg), "kgCO2e", source, method).with_exact(mg, "mg")
    };
    let facility_mj = total.energy_mj.site;
    let annual = (total.ppa_delivered_mj + total.go_used_mj).min(facility_mj);
    let mut instruments = BTreeMap::new();
    let energy = |mj: i64, method: &str| {
        Field::filled(kwh(mj), "kWh", Source::Contractual, method.into()).with_exact(mj, "mJ")
    };
    instruments.insert(
        "ppa_delivered",
        energy(total.ppa_delivered_mj, "PPA supply in the period's hours"),
    );
    instruments.insert(
        "ppa_matched",
        energy(
            total.ppa_matched_mj,
            "PPA supply used by the load of the same hour",
        ),
    );
    instruments.insert(
        "ppa_forfeited",
        energy(
            (total.ppa_delivered_mj - total.ppa_matched_mj).max(0),
            "PPA supply no load used in its hour (matching is hourly)",
        ),
    );
    instruments.insert(
        "go_used",
        energy(
            total.go_used_mj,
            "guarantees of origin used after PPA supply",
        ),
    );
    instruments.insert(
        "uncovered",
        energy(
            total.uncovered_mj,
            "energy no instrument covered: residual mix, else grid average",
        ),
    );
    let [measured, interpolated, estimated, missing] = inputs.intensity_hours;
    Carbon {
        location_based: mass(
            total.co2e_location_mg.site,
            Source::Metered,
            format!(
                "each window's facility energy x the grid-average intensity of zone {:?} in its hour",
                inputs.zone
            ),
        ),
        market_based: mass(
            total.co2e_market_mg.site,
            Source::Contractual,
            "hour by hour: PPA supply of the same hour at 0, then guarantees of origin at 0, then the residual mix, else the grid average".into(),
        ),
        embodied: mass(
            total.co2e_embodied_mg.site,
            Source::Estimated,
            "device embodied carbon x time held / expected lifetime (SCI M term), from the embodied device table".into(),
        ),
        annual_matching: Field::ratio(
            share(annual, facility_mj),
            "",
            "(PPA supply delivered + guarantees of origin used) / facility energy, over the period, at most 1".into(),
            || "no facility energy in the period".into(),
        ),
        hourly_matching_cfe: Field::ratio(
            share(total.ppa_matched_mj, facility_mj),
            "",
            "PPA supply matched by the load of the same hour / facility energy (24/7 CFE score)".into(),
            || "no facility energy in the period".into(),
        ),
        instruments,
        intensity_hours: BTreeMap::from([
            ("measured", measured),
            ("interpolated", interpolated),
            ("estimated", estimated),
            ("missing", missing),
        ]),
        zone: inputs.zone.clone(),
        sci: super::annex::sci(inputs),
        factor_tables: factor_table_lines(inputs),
        intensity_feeds: feed_lines(inputs),
    }
}

/// One month of the period (the first and last cut by it), or one step of the trend.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Month {
    /// `YYYY-MM` of the step's start.
    pub month: String,
    pub from: String,
    pub to: String,
    pub facility_kwh: Decimal,
    pub it_kwh: Decimal,
    pub overhead_kwh: Decimal,
    pub jobs_kwh: Decimal,
    pub idle_kwh: Decimal,
    pub unattributed_kwh: Decimal,
    pub water_l: Decimal,
    pub pue: Option<Decimal>,
    pub wue_l_per_kwh: Option<Decimal>,
    pub co2e_location_kg: Decimal,
    pub co2e_market_kg: Decimal,
    pub co2e_embodied_kg: Decimal,
    pub hourly_matching_cfe: Option<Decimal>,
}

/// The facility in steps short enough to draw the period (months over a year, days over
/// weeks, hours over a day or two).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Trend {
    pub step: String,
    pub points: Vec<Month>,
}

pub fn months(inputs: &ReportInputs) -> Vec<Month> {
    steps(&inputs.months)
}

pub fn trend(inputs: &ReportInputs) -> Trend {
    Trend {
        step: inputs.trend_step.clone(),
        points: steps(&inputs.trend),
    }
}

fn steps(figures: &[FacilityFigures]) -> Vec<Month> {
    use footprint_core::UnixNanos;
    use footprint_core::time::format_rfc3339;
    figures
        .iter()
        .map(|month| {
            let it = i128::from(month.it_mj);
            Month {
                month: format_rfc3339(UnixNanos(month.start_ns))
                    .get(..7)
                    .unwrap_or_default()
                    .to_owned(),
                from: format_rfc3339(UnixNanos(month.start_ns)),
                to: format_rfc3339(UnixNanos(month.end_ns)),
                facility_kwh: kwh(month.energy_mj.site),
                it_kwh: kwh(month.it_mj),
                overhead_kwh: kwh(month.overhead_mj),
                jobs_kwh: kwh(month.energy_mj.jobs),
                idle_kwh: kwh(month.energy_mj.idle),
                unattributed_kwh: kwh(month.energy_mj.unattributed),
                water_l: super::figures::litres(month.water_ml.site),
                pue: Decimal::ratio(i128::from(month.energy_mj.site), it, 4),
                wue_l_per_kwh: Decimal::ratio(i128::from(month.water_ml.site) * 3_600_000, it, 4),
                co2e_location_kg: kilograms(month.co2e_location_mg.site),
                co2e_market_kg: kilograms(month.co2e_market_mg.site),
                co2e_embodied_kg: kilograms(month.co2e_embodied_mg.site),
                hourly_matching_cfe: share(month.ppa_matched_mj, month.energy_mj.site),
            }
        })
        .collect()
}
