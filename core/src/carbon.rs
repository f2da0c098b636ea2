//! Grid carbon-intensity feeds: parsing the formats Footprint imports, and the rule that fills
//! the hours a feed does not cover.
//!
//! Every value becomes whole milligrams CO2e per kWh (g/kWh × 1000) parsed from the decimal text,
//! never through floating point, and keeps where it came from. Formats:
//! - CSV, plain: `datetime,zone,carbon_intensity_gco2_per_kwh`;
//! - CSV, Electricity Maps portal export: `datetime_utc,zone,ci_direct_gco2eq_per_kwh,…,estimated`
//!   (the direct, consumption-based figure; `estimated=true` rows are flagged estimated);
//! - CSV, EIA-930 derived: `datetime_utc,balancing_authority,…,avg_ci_gco2_per_kwh` (an empty
//!   value is a gap);
//! - WattTime v3 JSON (`data[].point_time`, `data[].value`, `meta.region`, `meta.units`,
//!   `meta.data_point_period_seconds`): sub-hourly points are averaged into their hour;
//! - Electricity Maps JSON (`zone`, `history[].carbonIntensity`, `datetime`, `isEstimated`,
//!   `estimationMethod`).
//!
//! Gap rule ([`fill`]): an hour between two known hours is interpolated linearly (flagged
//! interpolated); an hour before the first or after the last known hour takes the nearest known
//! value (flagged estimated).

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::quality::Quality;
use crate::time::parse_rfc3339;
use crate::units::{MgCo2ePerKwh, NANOS_PER_HOUR};

/// Errors a feed can have; each names where and why.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FeedError {
    #[error("line {line}: field `{field}`: {reason}")]
    Field {
        line: usize,
        field: String,
        reason: String,
    },
    #[error("header: {0}")]
    Header(String),
    #[error("JSON: {0}")]
    Json(String),
    #[error("hour_convention: {0}")]
    HourConvention(String),
}

/// Which hour a feed's timestamp names: the one it starts (Electricity Maps, WattTime, our own
/// CSV) or the one it ends (EIA's own files: "UTC time at end of hour"). Read wrongly, every
/// intensity is applied an hour off.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum HourConvention {
    #[default]
    Starting,
    Ending,
}

impl HourConvention {
    pub fn name(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Ending => "ending",
        }
    }

    /// `starting` or `ending`.
    ///
    /// # Errors
    /// Anything else, named.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.trim() {
            "starting" => Ok(Self::Starting),
            "ending" => Ok(Self::Ending),
            other => Err(format!("{other:?} is not starting or ending")),
        }
    }

    /// The convention a layout states itself; `None` where it does not (the EIA-930 re-export
    /// stamps `datetime_utc` without saying which, and not the same way for every BA).
    pub fn of_layout(format: &str) -> Option<Self> {
        match format {
            "csv" | "electricitymaps-csv" | "electricitymaps-json" | "watttime-v3" => {
                Some(Self::Starting)
            }
            _ => None,
        }
    }
}

/// One hour of one zone's grid intensity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IntensityHour {
    pub zone: String,
    /// Start of the hour, ns since the Unix epoch (UTC).
    pub hour_ns: i64,
    pub mg_per_kwh: MgCo2ePerKwh,
    pub quality: Quality,
}

/// A parsed feed: its format and hours (each keyed by the hour it starts), the rows it skipped as
/// gaps, and how its timestamps were read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Feed {
    pub format: &'static str,
    pub hours: Vec<IntensityHour>,
    pub gaps: usize,
    pub hour_convention: HourConvention,
}

/// Parses a decimal number of grams into whole milligrams, rounding past three decimals half up.
pub fn parse_grams_as_mg(text: &str) -> Result<u64, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty".into());
    }
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty() && fraction.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !fraction.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(format!("{text:?} is not a non-negative decimal number"));
    }
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole
            .parse()
            .map_err(|_| format!("{text:?} is out of range"))?
    };
    let mut digits = fraction.bytes().map(|b| u64::from(b - b'0'));
    let mut milli = 0;
    for _ in 0..3 {
        milli = milli * 10 + digits.next().unwrap_or(0);
    }
    let round_up = u64::from(digits.next().unwrap_or(0) >= 5);
    whole
        .checked_mul(1_000)
        .and_then(|mg| mg.checked_add(milli + round_up))
        .filter(|mg| *mg <= 100_000_000)
        .ok_or_else(|| format!("{text:?} g/kWh is implausible (over 100 000)"))
}

fn hour_of(ns: i64) -> i64 {
    ns.div_euclid(NANOS_PER_HOUR) * NANOS_PER_HOUR
}

/// Parses any of the CSV layouts, recognised by the header.
///
/// # Errors
/// An unknown header, or a row whose time, zone or value cannot be read (gaps are not errors).
pub fn parse_csv(text: &str) -> Result<Feed, FeedError> {
    let mut lines = text.lines().enumerate();
    let header: Vec<&str> = lines
        .next()
        .map(|(_, h)| h.trim().split(',').collect())
        .unwrap_or_default();
    let column = |name: &str| header.iter().position(|h| *h == name);
    let (format, time, zone, value, estimated) = if let (Some(t), Some(z), Some(v)) = (
        column("datetime"),
        column("zone"),
        column("carbon_intensity_gco2_per_kwh"),
    ) {
        ("csv", t, z, v, None)
    } else if let (Some(t), Some(z), Some(v)) = (
        column("datetime_utc"),
        column("zone"),
        column("ci_direct_gco2eq_per_kwh"),
    ) {
        ("electricitymaps-csv", t, z, v, column("estimated"))
    } else if let (Some(t), Some(z), Some(v)) = (
        column("datetime_utc"),
        column("balancing_authority"),
        column("avg_ci_gco2_per_kwh"),
    ) {
        ("eia930-csv", t, z, v, None)
    } else {
        return Err(FeedError::Header(format!(
            "unknown layout {:?}; expected `datetime,zone,carbon_intensity_gco2_per_kwh`, an Electricity Maps export or an EIA-930 file",
            header.join(",")
        )));
    };
    let mut feed = Feed {
        format,
        ..Feed::default()
    };
    for (index, line) in lines {
        let line_number = index + 1;
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').collect();
        let field = |at: usize| fields.get(at).copied().unwrap_or("").trim();
        let error = |name: &str, reason: String| FeedError::Field {
            line: line_number,
            field: name.to_owned(),
            reason,
        };
        if field(value).is_empty() {
            feed.gaps += 1;
            continue;
        }
        let hour_ns = parse_rfc3339(field(time))
            .map(|at| at.0)
            .map_err(|e| error(header[time], e))?;
        if hour_ns != hour_of(hour_ns) {
            return Err(error(header[time], "not the start of an hour".into()));
        }
        if field(zone).is_empty() {
            return Err(error(header[zone], "empty".into()));
        }
        let mg_per_kwh = parse_grams_as_mg(field(value)).map_err(|e| error(header[value], e))?;
        let quality = match estimated.map(field) {
            Some("true") => Quality::Estimated,
            Some("false" | "") | None => Quality::Measured,
            Some(other) => {
                return Err(error(
                    "estimated",
                    format!("{other:?} is not true or false"),
                ));
            }
        };
        feed.hours.push(IntensityHour {
            zone: field(zone).to_owned(),
            hour_ns,
            mg_per_kwh: MgCo2ePerKwh(mg_per_kwh),
            quality,
        });
    }
    Ok(feed)
}

#[derive(Deserialize)]
struct WattTime {
    data: Vec<WattTimePoint>,
    meta: WattTimeMeta,
}

#[derive(Deserialize)]
struct WattTimePoint {
    point_time: String,
    value: serde_json::Number,
}

#[derive(Deserialize)]
struct WattTimeMeta {
    region: String,
    units: String,
    data_point_period_seconds: Option<u64>,
}

/// Parses a WattTime v3 `historical`/`forecast` answer; points are averaged into their hour.
///
/// # Errors
/// Malformed JSON, an unknown unit, or a bad time or value (named by field).
pub fn parse_watttime(text: &str) -> Result<Feed, FeedError> {
    let answer: WattTime =
        serde_json::from_str(text).map_err(|e| FeedError::Json(e.to_string()))?;
    // lbs/MWh → g/kWh: × 453.59237 / 1000; kept as an exact rational on milligrams.
    let (numerator, denominator): (u128, u128) = match answer.meta.units.as_str() {
        "lbs_co2_per_mwh" => (45_359_237, 100_000_000),
        "g_co2_per_kwh" | "gco2_per_kwh" => (1, 1),
        other => {
            return Err(FeedError::Json(format!(
                "meta.units: {other:?} is not lbs_co2_per_mwh or g_co2_per_kwh"
            )));
        }
    };
    let period = answer.meta.data_point_period_seconds.unwrap_or(300);
    if period == 0 || period > 3_600 {
        return Err(FeedError::Json(format!(
            "meta.data_point_period_seconds: {period} is not between 1 and 3600"
        )));
    }
    let mut hours: BTreeMap<i64, (u128, u128)> = BTreeMap::new();
    for (index, point) in answer.data.iter().enumerate() {
        let error = |field: &str, reason: String| FeedError::Field {
            line: index,
            field: format!("data[{index}].{field}"),
            reason,
        };
        let at = parse_rfc3339(&point.point_time)
            .map(|at| at.0)
            .map_err(|e| error("point_time", e))?;
        let mg = parse_grams_as_mg(&point.value.to_string()).map_err(|e| error("value", e))?;
        let entry = hours.entry(hour_of(at)).or_default();
        entry.0 += u128::from(mg);
        entry.1 += 1;
    }
    let points_per_hour = u128::from(3_600 / period);
    Ok(Feed {
        format: "watttime-v3",
        hours: hours
            .into_iter()
            .map(|(hour_ns, (sum, count))| IntensityHour {
                zone: answer.meta.region.clone(),
                hour_ns,
                mg_per_kwh: {
                    let scale = denominator * count;
                    MgCo2ePerKwh(((sum * numerator + scale / 2) / scale) as u64)
                },
                // An hour missing some of its points is an average of what there was.
                quality: if count >= points_per_hour {
                    Quality::Measured
                } else {
                    Quality::Interpolated
                },
            })
            .collect(),
        gaps: 0,
        hour_convention: HourConvention::Starting,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ElectricityMaps {
    zone: String,
    history: Vec<ElectricityMapsPoint>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ElectricityMapsPoint {
    carbon_intensity: Option<serde_json::Number>,
    datetime: String,
    #[serde(default)]
    is_estimated: bool,
    #[serde(default)]
    #[allow(
        dead_code,
        reason = "read for the format's completeness; the flag carries it"
    )]
    estimation_method: Option<String>,
}

/// Parses an Electricity Maps `carbon-intensity/history` answer.
///
/// # Errors
/// Malformed JSON, or a bad time or value (named by field).
pub fn parse_electricitymaps(text: &str) -> Result<Feed, FeedError> {
    let answer: ElectricityMaps =
        serde_json::from_str(text).map_err(|e| FeedError::Json(e.to_string()))?;
    let mut feed = Feed {
        format: "electricitymaps-json",
        ..Feed::default()
    };
    for (index, point) in answer.history.iter().enumerate() {
        let error = |field: &str, reason: String| FeedError::Field {
            line: index,
            field: format!("history[{index}].{field}"),
            reason,
        };
        let Some(value) = &point.carbon_intensity else {
            feed.gaps += 1;
            continue;
        };
        let at = parse_rfc3339(&point.datetime)
            .map(|at| at.0)
            .map_err(|e| error("datetime", e))?;
        feed.hours.push(IntensityHour {
            zone: answer.zone.clone(),
            hour_ns: hour_of(at),
            mg_per_kwh: MgCo2ePerKwh(
                parse_grams_as_mg(&value.to_string()).map_err(|e| error("carbonIntensity", e))?,
            ),
            quality: if point.is_estimated {
                Quality::Estimated
            } else {
                Quality::Measured
            },
        });
    }
    Ok(feed)
}

/// Parses a feed, choosing the parser by content: JSON with `history` is Electricity Maps, JSON
/// with `data` is WattTime, anything else CSV.
///
/// # Errors
/// As the chosen parser.
///
/// `convention` says which hour a timestamp names; without it the layout's own
/// ([`HourConvention::of_layout`]) is used, and a layout that states none is refused. Hours are
/// stored by the hour they start: an hour-ending stamp of 01:00 is the hour from 00:00.
///
/// # Errors
/// As the layout's parser, or [`FeedError::HourConvention`] when the convention is neither given
/// nor stated by the layout, or cannot apply to it.
pub fn parse_feed(text: &str, convention: Option<HourConvention>) -> Result<Feed, FeedError> {
    let trimmed = text.trim_start();
    let mut feed = if trimmed.starts_with('{') {
        if trimmed.contains("\"history\"") {
            parse_electricitymaps(text)?
        } else {
            parse_watttime(text)?
        }
    } else {
        parse_csv(text)?
    };
    let Some(convention) = convention.or(HourConvention::of_layout(feed.format)) else {
        return Err(FeedError::HourConvention(format!(
            "the {} layout does not say whether a timestamp marks the start or the end of its \
             hour; give it (`hour_convention = \"starting\"` or `\"ending\"` in the feed's \
             config, `--hour-convention` to import-intensity)",
            feed.format
        )));
    };
    if convention == HourConvention::Ending {
        if feed.format == "watttime-v3" {
            // Points are averaged into hours by their own start; an hour-ending reading of
            // five-minute points is not an hour shift.
            return Err(FeedError::HourConvention(
                "watttime-v3 stamps each point at its start; ending does not apply".into(),
            ));
        }
        for hour in &mut feed.hours {
            hour.hour_ns -= NANOS_PER_HOUR;
        }
    }
    feed.hour_convention = convention;
    Ok(feed)
}

/// The intensity of `hour_ns` given the nearest known hours before (or at) and after it.
pub fn fill(
    hour_ns: i64,
    at_or_before: Option<(i64, MgCo2ePerKwh, Quality)>,
    after: Option<(i64, MgCo2ePerKwh, Quality)>,
) -> Option<(MgCo2ePerKwh, Quality)> {
    match (at_or_before, after) {
        (Some((at, mg, quality)), _) if at == hour_ns => Some((mg, quality)),
        (Some((t0, v0, q0)), Some((t1, v1, q1))) => {
            let span = i128::from(t1 - t0);
            let offset = i128::from(hour_ns - t0);
            let (v0, v1) = (i128::from(v0.0), i128::from(v1.0));
            let value = v0 + (v1 - v0) * offset / span;
            Some((
                MgCo2ePerKwh(value as u64),
                q0.worst(q1).worst(Quality::Interpolated),
            ))
        }
        (Some((_, mg, _)), None) | (None, Some((_, mg, _))) => Some((mg, Quality::Estimated)),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn decimals_become_whole_milligrams_without_floats() {
        assert_eq!(parse_grams_as_mg("222.296"), Ok(222_296));
        assert_eq!(parse_grams_as_mg("62.55"), Ok(62_550));
        assert_eq!(parse_grams_as_mg("0.0005"), Ok(1));
        assert_eq!(parse_grams_as_mg("7"), Ok(7_000));
        assert!(parse_grams_as_mg("-3").is_err());
        assert!(parse_grams_as_mg("NaN").is_err());
        assert!(parse_grams_as_mg("1e3").is_err());
    }

    #[test]
    fn the_three_csv_layouts_are_recognised() {
        let plain = "datetime,zone,carbon_intensity_gco2_per_kwh\n2024-03-01T10:00:00Z,DE,301.5\n";
        let feed = parse_csv(plain).expect("plain");
        assert_eq!(feed.format, "csv");
        assert_eq!(feed.hours[0].mg_per_kwh, MgCo2ePerKwh(301_500));
        let maps = "datetime_utc,zone,ci_direct_gco2eq_per_kwh,ci_lca_gco2eq_per_kwh,low_carbon_pct,renewable_pct,estimated\n\
                    2023-01-01T00:00:00Z,GB,62.55,91.44,86.0,60.17,false\n\
                    2023-01-01T01:00:00Z,GB,65.09,94.66,85.67,60.35,true\n";
        let feed = parse_csv(maps).expect("maps");
        assert_eq!(feed.hours[1].quality, Quality::Estimated);
        assert_eq!(
            feed.hours[1].hour_ns,
            1_672_534_800 * crate::units::NANOS_PER_SECOND
        );
        let eia = "datetime_utc,balancing_authority,wind_mwh,solar_mwh,hydro_mwh,oil_mwh,natural_gas_mwh,coal_mwh,nuclear_mwh,other_mwh,avg_ci_gco2_per_kwh\n\
                   2022-01-05T09:00:00Z,CISO,1,1,1,1,1,1,1,1,222.296\n\
                   2022-01-05T10:00:00Z,CISO,,,,,,,,,\n";
        let feed = parse_csv(eia).expect("eia");
        assert_eq!((feed.hours.len(), feed.gaps), (1, 1));
    }

    #[test]
    fn bad_rows_name_line_and_field() {
        let bad = "datetime,zone,carbon_intensity_gco2_per_kwh\n2024-03-01T10:30:00Z,DE,301.5\n";
        let error = parse_csv(bad).expect_err("half hour");
        assert!(
            error.to_string().contains("line 2: field `datetime`"),
            "{error}"
        );
        let bad = "datetime,zone,carbon_intensity_gco2_per_kwh\n2024-03-01T10:00:00Z,DE,lots\n";
        assert!(
            parse_csv(bad)
                .expect_err("value")
                .to_string()
                .contains("carbon_intensity_gco2_per_kwh")
        );
        assert!(matches!(parse_csv("a,b\n"), Err(FeedError::Header(_))));
    }

    #[test]
    fn watttime_points_average_into_hours_and_convert_pounds() {
        let json = r#"{"data":[{"point_time":"2024-01-01T00:00:00+00:00","value":1000},
                              {"point_time":"2024-01-01T00:30:00+00:00","value":2000}],
                      "meta":{"region":"CAISO_NORTH","units":"lbs_co2_per_mwh","data_point_period_seconds":1800}}"#;
        let feed = parse_feed(json, None).expect("watttime");
        assert_eq!(feed.format, "watttime-v3");
        // 1 500 lbs/MWh = 680.388555 g/kWh.
        assert_eq!(feed.hours[0].mg_per_kwh, MgCo2ePerKwh(680_389));
        assert_eq!(feed.hours[0].quality, Quality::Measured);
        assert_eq!(feed.hours[0].zone, "CAISO_NORTH");
    }

    #[test]
    fn electricity_maps_history_keeps_estimates_flagged() {
        let json = r#"{"zone":"DE","history":[
            {"carbonIntensity":302,"datetime":"2024-01-01T00:00:00.000Z","isEstimated":false,"estimationMethod":null},
            {"carbonIntensity":310,"datetime":"2024-01-01T01:00:00.000Z","isEstimated":true,"estimationMethod":"TIME_SLICER_AVERAGE"},
            {"carbonIntensity":null,"datetime":"2024-01-01T02:00:00.000Z"}]}"#;
        let feed = parse_feed(json, None).expect("maps json");
        assert_eq!(feed.hours.len(), 2);
        assert_eq!(feed.gaps, 1);
        assert_eq!(feed.hours[1].quality, Quality::Estimated);
    }

    #[test]
    fn gaps_are_interpolated_inside_and_held_at_the_edges() {
        let h = NANOS_PER_HOUR;
        let mg = MgCo2ePerKwh;
        let before = Some((0, mg(100_000), Quality::Measured));
        let after = Some((4 * h, mg(300_000), Quality::Measured));
        assert_eq!(
            fill(h, before, after),
            Some((mg(150_000), Quality::Interpolated))
        );
        assert_eq!(
            fill(0, before, after),
            Some((mg(100_000), Quality::Measured))
        );
        assert_eq!(
            fill(9 * h, after, None),
            Some((mg(300_000), Quality::Estimated))
        );
        assert_eq!(fill(h, None, None), None);
    }

    proptest! {
        #[test]
        fn no_input_makes_the_parsers_panic(text in ".{0,400}") {
            let _ = parse_feed(&text, None);
            let _ = parse_feed(&text, Some(HourConvention::Ending));
            let _ = parse_csv(&format!("datetime,zone,carbon_intensity_gco2_per_kwh\n{text}"));
        }

        #[test]
        fn interpolation_stays_between_its_neighbours(v0 in 0u64..10_000_000, v1 in 0u64..10_000_000, gap in 2i64..100, at in 1i64..100) {
            let at = at.min(gap - 1);
            let (value, _) = fill(at, Some((0, MgCo2ePerKwh(v0), Quality::Measured)), Some((gap, MgCo2ePerKwh(v1), Quality::Measured))).expect("filled");
            let value = value.0;
            prop_assert!(value >= v0.min(v1) && value <= v0.max(v1));
        }
    }
}
