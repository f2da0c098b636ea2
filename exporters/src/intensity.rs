//! A zone's grid intensity hour by hour, as the ledger prices it: JSON lines and a terminal table
//! that say, per hour, the figure, how it was obtained and the feed it came from.

use footprint_core::UnixNanos;
use footprint_core::time::format_rfc3339;
use footprint_proto::v1::{IntensityHour, Quality};
use serde::Serialize;

/// An imported feed, as an auditor finds it again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FeedLine {
    pub file: String,
    /// Of the file's bytes; empty for hours imported before feeds were recorded.
    pub sha256: String,
    pub layout: String,
    /// `starting` or `ending`: which hour the feed's timestamps name.
    pub hour_convention: String,
}

/// One hour.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct IntensityLine {
    /// Start of the hour, RFC 3339.
    pub hour: String,
    pub hour_start_ns: i64,
    /// g CO2e per kWh; `null` where no feed covers the zone.
    pub g_per_kwh: Option<f64>,
    pub mg_per_kwh: Option<u64>,
    /// `measured` (the feed's row), `interpolated` (between its neighbours), `estimated` (held).
    pub quality: Option<&'static str>,
    pub method: String,
    pub feeds: Vec<FeedLine>,
    /// For a settled hour: the mg CO2e per kWh its carbon was priced with.
    pub priced_mg_per_kwh: Option<u64>,
}

impl From<&IntensityHour> for IntensityLine {
    fn from(hour: &IntensityHour) -> Self {
        let quality = match Quality::try_from(hour.quality) {
            Ok(Quality::Measured) => Some("measured"),
            Ok(Quality::Interpolated) => Some("interpolated"),
            Ok(Quality::Estimated) => Some("estimated"),
            Ok(Quality::Unspecified) | Err(_) => None,
        };
        Self {
            hour: format_rfc3339(UnixNanos(hour.hour_ns)),
            hour_start_ns: hour.hour_ns,
            g_per_kwh: hour.known.then(|| hour.mg_per_kwh as f64 / 1_000.0),
            mg_per_kwh: hour.known.then_some(hour.mg_per_kwh),
            quality: quality.filter(|_| hour.known),
            method: hour.method.clone(),
            feeds: hour
                .feeds
                .iter()
                .map(|feed| FeedLine {
                    file: feed.file.clone(),
                    sha256: feed.sha256.clone(),
                    layout: feed.layout.clone(),
                    hour_convention: feed.hour_convention.clone(),
                })
                .collect(),
            priced_mg_per_kwh: hour.priced.then_some(hour.priced_mg_per_kwh),
        }
    }
}

/// The hours as a table: hour, g/kWh, quality, what the settled hour was priced with, the feed
/// (file, hour convention, the start of its SHA-256) and how the figure was obtained.
pub fn render(lines: &[IntensityLine]) -> String {
    let feed_of = |line: &IntensityLine| {
        line.feeds
            .iter()
            .map(|feed| match feed.sha256.get(..12) {
                Some(sha) => format!("{} (hour-{}, {sha})", feed.file, feed.hour_convention),
                None => feed.file.clone(),
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    let feeds: Vec<String> = lines.iter().map(feed_of).collect();
    let width = feeds
        .iter()
        .map(|f| f.chars().count())
        .max()
        .unwrap_or(0)
        .max(4);
    let grams = |mg: Option<u64>| {
        mg.map_or_else(
            || "-".to_owned(),
            |mg| format!("{:.3}", mg as f64 / 1_000.0),
        )
    };
    let mut out = format!(
        "{:<20}  {:>9}  {:<12}  {:>9}  {:<width$}  METHOD\n",
        "HOUR (UTC, start)", "g/kWh", "QUALITY", "PRICED", "FEED"
    );
    for (line, feed) in lines.iter().zip(&feeds) {
        out.push_str(&format!(
            "{:<20}  {:>9}  {:<12}  {:>9}  {:<width$}  {}\n",
            line.hour,
            grams(line.mg_per_kwh),
            line.quality.unwrap_or("-"),
            grams(line.priced_mg_per_kwh),
            feed,
            line.method
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use footprint_proto::v1::FeedInfo;

    use super::*;

    #[test]
    fn an_hour_says_its_figure_quality_and_feed() {
        let hour = IntensityHour {
            hour_ns: 1_647_734_400_000_000_000,
            known: true,
            mg_per_kwh: 246_737,
            quality: Quality::Measured as i32,
            method: "the feed's row for this hour".into(),
            feeds: vec![FeedInfo {
                file: "eia.csv".into(),
                sha256: "0123456789abcdef".into(),
                layout: "eia930-csv".into(),
                hour_convention: "ending".into(),
            }],
            priced: false,
            priced_mg_per_kwh: 0,
        };
        let line = IntensityLine::from(&hour);
        assert_eq!(line.hour, "2022-03-20T00:00:00Z");
        assert_eq!(
            (line.g_per_kwh, line.quality, line.priced_mg_per_kwh),
            (Some(246.737), Some("measured"), None)
        );
        let table = render(&[line]);
        assert!(
            table.contains("246.737") && table.contains("eia.csv (hour-ending, 0123456789ab)"),
            "{table}"
        );
        let unknown = IntensityLine::from(&IntensityHour {
            known: false,
            ..hour
        });
        assert_eq!((unknown.g_per_kwh, unknown.quality), (None, None));
    }
}
