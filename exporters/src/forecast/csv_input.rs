//! A series from a CSV file: a time column and a value column, optionally only the rows where
//! another column has a given value (one host of a file holding several).

use std::collections::BTreeSet;
use std::io::Read;

use super::ForecastError;
use super::series::Clock;

/// Which columns to read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CsvColumns {
    pub time: String,
    pub value: String,
    /// Only rows whose column `.0` holds `.1`.
    pub only: Option<(String, String)>,
}

/// The points read and what was left out.
#[derive(Clone, Debug, PartialEq)]
pub struct CsvPoints {
    pub points: Vec<(i64, f64)>,
    pub clock: Clock,
    /// Rows whose value was empty (read as gaps).
    pub empty_values: u64,
}

/// Reads the points of `columns` from CSV text with a header row.
///
/// # Errors
/// [`ForecastError::Input`] naming the column (missing, with the columns there are) or the row
/// and column (a time or number that does not parse, times with and without offsets mixed), or
/// saying that no row matched the filter.
pub fn read(input: impl Read, columns: &CsvColumns) -> Result<CsvPoints, ForecastError> {
    let mut reader = csv::ReaderBuilder::new().flexible(false).from_reader(input);
    let headers = reader
        .headers()
        .map_err(|e| ForecastError::Input(format!("header row: {e}")))?
        .clone();
    let position = |name: &str, flag: &str| {
        headers
            .iter()
            .position(|h| h.trim() == name)
            .ok_or_else(|| {
                ForecastError::Input(format!(
                    "{flag} {name:?}: no such column (the columns are {})",
                    headers.iter().collect::<Vec<_>>().join(", ")
                ))
            })
    };
    let time_at = position(&columns.time, "--time-column")?;
    let value_at = position(&columns.value, "--value-column")?;
    let only = match &columns.only {
        Some((column, wanted)) => Some((position(column, "--only")?, wanted.as_str())),
        None => None,
    };
    let mut points = Vec::new();
    let mut clock = None;
    let mut empty_values = 0;
    let mut seen = BTreeSet::new();
    for (index, record) in reader.records().enumerate() {
        // Row 1 is the header; the first record is row 2, as a spreadsheet numbers it.
        let row = index + 2;
        let record = record.map_err(|e| ForecastError::Input(format!("row {row}: {e}")))?;
        let field = |at: usize| record.get(at).unwrap_or("").trim();
        if let Some((at, wanted)) = only
            && field(at) != wanted
        {
            if seen.len() < 20 {
                seen.insert(field(at).to_owned());
            }
            continue;
        }
        let (at, has_offset) = footprint_core::time::parse_instant_or_wall_clock(field(time_at))
            .map_err(|e| {
                ForecastError::Input(format!("row {row}, column {:?}: {e}", columns.time))
            })?;
        let this_clock = if has_offset {
            Clock::Utc
        } else {
            Clock::WallClock
        };
        if *clock.get_or_insert(this_clock) != this_clock {
            return Err(ForecastError::Input(format!(
                "row {row}, column {:?}: times with and without a UTC offset are mixed",
                columns.time
            )));
        }
        let text = field(value_at);
        if text.is_empty() {
            empty_values += 1;
            continue;
        }
        let value: f64 = text
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite())
            .ok_or_else(|| {
                ForecastError::Input(format!(
                    "row {row}, column {:?}: {text:?} is not a number",
                    columns.value
                ))
            })?;
        points.push((at.0, value));
    }
    if points.is_empty() {
        return Err(ForecastError::Input(match (&columns.only, empty_values) {
            (Some((column, wanted)), 0) => format!(
                "--only {column}={wanted}: no row has it (values seen: {})",
                seen.into_iter().collect::<Vec<_>>().join(", ")
            ),
            (_, 0) => "the file has no rows".into(),
            _ => format!(
                "column {:?}: every value is empty (a series all gaps)",
                columns.value
            ),
        }));
    }
    Ok(CsvPoints {
        points,
        clock: clock.unwrap_or(Clock::Utc),
        empty_values,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns(only: Option<(&str, &str)>) -> CsvColumns {
        CsvColumns {
            time: "t".into(),
            value: "w".into(),
            only: only.map(|(a, b)| (a.into(), b.into())),
        }
    }

    #[test]
    fn reads_wall_clock_and_utc_times_and_filters_rows() {
        let text = "t,host,w\n2024-01-01T00:00:00,a,1.5\n2024-01-01T00:00:00,b,9\n2024-01-01T01:00:00,a,\n";
        let read = read(text.as_bytes(), &columns(Some(("host", "a")))).unwrap();
        assert_eq!(read.clock, Clock::WallClock);
        assert_eq!(read.points, vec![(1_704_067_200_000_000_000, 1.5)]);
        assert_eq!(read.empty_values, 1);
        let utc = super::read(
            "t,w\n2024-01-01T01:00:00+01:00,2\n".as_bytes(),
            &columns(None),
        )
        .unwrap();
        assert_eq!(utc.clock, Clock::Utc);
        assert_eq!(utc.points, vec![(1_704_067_200_000_000_000, 2.0)]);
    }

    /// A US/Eastern export around both clock changes of 2024: 02:00 on 10 March does not exist
    /// (a gap), 01:00 on 3 November happens twice (two rows, averaged into one step).
    #[test]
    fn daylight_saving_in_a_local_time_export() {
        let text = "t,w\n\
            2024-03-10T00:00:00,10\n2024-03-10T01:00:00,11\n2024-03-10T03:00:00,13\n\
            2024-11-03T00:00:00,20\n2024-11-03T01:00:00,21\n2024-11-03T01:00:00,23\n\
            2024-11-03T02:00:00,24\n";
        let read = read(text.as_bytes(), &columns(None)).unwrap();
        assert_eq!(read.clock, Clock::WallClock);
        let (series, notes) =
            super::super::Series::from_points(&read.points, 3_600_000_000_000, read.clock).unwrap();
        let march: Vec<Option<f64>> = series.values[..4].to_vec();
        assert_eq!(march, vec![Some(10.0), Some(11.0), None, Some(13.0)]);
        let november = &series.values[series.values.len() - 3..];
        assert_eq!(november, &[Some(20.0), Some(22.0), Some(24.0)]);
        assert_eq!(notes.steps_averaged, 1);
        // The March gap, and the days between the two clock changes.
        assert_eq!(notes.missing_steps, notes.steps - 6);
        assert_eq!(series.format_time(series.start_ns), "2024-03-10T00:00:00");
    }

    #[test]
    fn every_bad_input_names_its_column_or_row() {
        let cases = [
            (
                "x,w\n",
                "--time-column \"t\": no such column (the columns are x, w)",
            ),
            (
                "t,w\n2024-01-01T00:00:00,abc\n",
                "row 2, column \"w\": \"abc\" is not a number",
            ),
            (
                "t,w\n2024-01-01T00:00:00,1\nyesterday,2\n",
                "row 3, column \"t\"",
            ),
            (
                "t,w\n2024-01-01T00:00:00,1\n2024-01-01T01:00:00Z,2\n",
                "row 3, column \"t\": times with and without",
            ),
            (
                "t,w\n2024-01-01T00:00:00,\n",
                "column \"w\": every value is empty",
            ),
            ("t,w\n", "the file has no rows"),
            ("t,w\n2024-01-01T00:00:00,NaN\n", "\"NaN\" is not a number"),
        ];
        for (text, expected) in cases {
            let message = read(text.as_bytes(), &columns(None))
                .unwrap_err()
                .to_string();
            assert!(message.contains(expected), "{text:?}: {message}");
        }
        let message = read(
            "t,host,w\n2024-01-01T00:00:00,a,1\n".as_bytes(),
            &columns(Some(("host", "z"))),
        )
        .unwrap_err()
        .to_string();
        assert!(
            message.contains("--only host=z: no row has it (values seen: a)"),
            "{message}"
        );
    }
}
