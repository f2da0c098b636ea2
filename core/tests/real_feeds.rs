//! The intensity parsers on real published data: a day of EIA-930 CISO with a real gap, and the
//! Electricity Maps export the demo embeds.

// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use footprint_core::Quality;
use footprint_core::carbon::{FeedError, HourConvention, fill, parse_feed};
use footprint_core::time::parse_rfc3339;

const HOUR: i64 = 3_600_000_000_000;

#[test]
fn an_eia930_slice_is_read_as_the_convention_given_and_refused_without_one() {
    let text = include_str!("data/eia930-ciso-2022-03-20.csv");
    let hour = parse_rfc3339("2022-03-20T00:00:00Z").unwrap().0;
    let value_of = |convention| {
        let feed = parse_feed(text, Some(convention)).unwrap();
        assert_eq!(feed.hour_convention, convention);
        feed.hours
            .iter()
            .find(|h| h.hour_ns == hour)
            .unwrap()
            .mg_per_kwh
            .0
    };
    // Hour-ending: the row stamped 01:00Z (246.737 g/kWh) is the hour that starts at 00:00Z.
    assert_eq!(value_of(HourConvention::Ending), 246_737);
    // Hour-starting: the row stamped 00:00Z (188.298 g/kWh).
    assert_eq!(value_of(HourConvention::Starting), 188_298);
    // The layout does not say which: no guess.
    let refused = parse_feed(text, None).unwrap_err();
    assert!(
        matches!(&refused, FeedError::HourConvention(why) if why.contains("eia930-csv")),
        "{refused}"
    );
}

#[test]
fn a_day_of_eia930_parses_and_its_gap_is_interpolated() {
    let feed = parse_feed(
        include_str!("data/eia930-ciso-2022-01-05.csv"),
        Some(HourConvention::Starting),
    )
    .unwrap();
    assert_eq!(feed.format, "eia930-csv");
    assert_eq!((feed.hours.len(), feed.gaps), (23, 1));
    assert!(feed.hours.iter().all(|h| h.zone == "CISO"));
    let at = |label: &str| {
        let hour = footprint_core::time::parse_rfc3339(label).unwrap().0;
        feed.hours
            .iter()
            .find(|h| h.hour_ns == hour)
            .map(|h| (hour, h.mg_per_kwh, h.quality))
    };
    // 09:00 = 290.837 g/kWh and 11:00 = 296.887 in the file; 10:00 is empty.
    let before = at("2022-01-05T09:00:00Z").unwrap();
    let after = at("2022-01-05T11:00:00Z").unwrap();
    assert_eq!((before.1.0, after.1.0), (290_837, 296_887));
    assert!(at("2022-01-05T10:00:00Z").is_none());
    assert_eq!(
        fill(before.0 + HOUR, Some(before), Some(after)),
        Some((footprint_core::MgCo2ePerKwh(293_862), Quality::Interpolated))
    );
}

#[test]
fn the_electricity_maps_export_parses_whole() {
    let feed = parse_feed(
        include_str!("../../cli/data/grid-intensity-de-2023-11.csv"),
        None,
    )
    .unwrap();
    // The layout stamps the start of each hour, and is read so without being told.
    assert_eq!(feed.hour_convention, HourConvention::Starting);
    assert_eq!(feed.format, "electricitymaps-csv");
    assert_eq!((feed.hours.len(), feed.gaps), (336, 0));
    // The first row: 2023-11-06T00:00:00Z,DE,137.41,…
    assert_eq!(feed.hours[0].mg_per_kwh.0, 137_410);
    assert!(
        feed.hours
            .windows(2)
            .all(|pair| pair[1].hour_ns - pair[0].hour_ns == HOUR)
    );
}
