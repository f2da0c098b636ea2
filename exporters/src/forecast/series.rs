//! A series on a regular clock: one value (or a gap) per step, made from timestamped points as
//! real exports give them (gaps, repeated stamps, stamps off the step).

use serde::Serialize;

use super::ForecastError;

/// Values at `start_ns + i × step_ns`; `None` where nothing was measured.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub start_ns: i64,
    pub step_ns: i64,
    pub values: Vec<Option<f64>>,
    /// Whether the times are instants (UTC) or wall-clock readings without an offset.
    pub clock: Clock,
}

/// What the series' times mean.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Clock {
    /// Instants, written in UTC.
    Utc,
    /// Local wall-clock readings without an offset: a daylight-saving repeat lands on the same
    /// step (averaged) and a skipped hour is a gap.
    WallClock,
}

/// How the points became the series: what a reader of a forecast or backtest needs to trust it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SeriesNotes {
    /// Points read.
    pub points: u64,
    /// Steps from the first point to the last.
    pub steps: u64,
    /// Steps with no point (gaps, and hours a clock change skipped).
    pub missing_steps: u64,
    /// Steps with more than one point (a wall clock's repeated hour, duplicate rows): the
    /// points' mean is the step's value.
    pub steps_averaged: u64,
    /// Points not on a step boundary, placed on the step they fall in.
    pub points_off_step: u64,
}

impl Series {
    /// Builds the series from `(time_ns, value)` points in any order, with step `step_ns`
    /// anchored on the epoch (so hourly steps start on the hour).
    ///
    /// # Errors
    /// [`ForecastError::Input`] for no points, a step that is not positive, or more than
    /// ten million steps from the first point to the last.
    pub fn from_points(
        points: &[(i64, f64)],
        step_ns: i64,
        clock: Clock,
    ) -> Result<(Self, SeriesNotes), ForecastError> {
        if step_ns <= 0 {
            return Err(ForecastError::Input("step: must be positive".into()));
        }
        let (Some(first), Some(last)) = (
            points.iter().map(|p| p.0).min(),
            points.iter().map(|p| p.0).max(),
        ) else {
            return Err(ForecastError::Input("the series has no values".into()));
        };
        // In i128: the span between two far-apart instants does not fit an i64.
        let step = i128::from(step_ns);
        let floor = |at: i64| i128::from(at).div_euclid(step) * step;
        let start = floor(first);
        let steps = (floor(last) - start) / step + 1;
        let (Ok(start_ns), true) = (i64::try_from(start), steps <= 10_000_000) else {
            return Err(ForecastError::Input(format!(
                "the series spans {steps} steps, more than the 10 000 000 a forecast reads"
            )));
        };
        let steps = usize::try_from(steps).unwrap_or(usize::MAX);
        let mut sums = vec![(0.0f64, 0u32); steps];
        let mut notes = SeriesNotes {
            points: points.len() as u64,
            steps: steps as u64,
            ..SeriesNotes::default()
        };
        for &(at, value) in points {
            if at.rem_euclid(step_ns) != 0 {
                notes.points_off_step += 1;
            }
            let index = usize::try_from((floor(at) - start) / step).unwrap_or(0);
            sums[index].0 += value;
            sums[index].1 += 1;
        }
        let values = sums
            .into_iter()
            .map(|(sum, count)| {
                match count {
                    0 => notes.missing_steps += 1,
                    1 => {}
                    _ => notes.steps_averaged += 1,
                }
                (count > 0).then(|| sum / f64::from(count))
            })
            .collect();
        Ok((
            Self {
                start_ns,
                step_ns,
                values,
                clock,
            },
            notes,
        ))
    }

    /// The time of step `index`.
    pub fn time_of(&self, index: usize) -> i64 {
        self.start_ns + index as i64 * self.step_ns
    }

    /// The end of the last step.
    pub fn end_ns(&self) -> i64 {
        self.time_of(self.values.len())
    }

    /// Steps in `seconds`, at least one.
    pub fn steps_in(&self, seconds: i64) -> usize {
        usize::try_from((seconds * 1_000_000_000 / self.step_ns).max(1)).unwrap_or(1)
    }

    /// The index of the step at `at_ns`, if it is a step boundary within `0..=len`.
    pub fn index_of(&self, at_ns: i64) -> Option<usize> {
        let offset = at_ns.checked_sub(self.start_ns)?;
        if offset < 0 || offset % self.step_ns != 0 {
            return None;
        }
        usize::try_from(offset / self.step_ns)
            .ok()
            .filter(|&i| i <= self.values.len())
    }

    /// The last value before step `index` and its index.
    pub fn last_before(&self, index: usize) -> Option<(usize, f64)> {
        self.values[..index.min(self.values.len())]
            .iter()
            .enumerate()
            .rev()
            .find_map(|(i, v)| v.map(|v| (i, v)))
    }

    /// Text for a time of this series: RFC 3339 in UTC, or the wall-clock reading without an
    /// offset as the input wrote it.
    pub fn format_time(&self, at_ns: i64) -> String {
        let text = footprint_core::time::format_rfc3339(footprint_core::UnixNanos(at_ns));
        match self.clock {
            Clock::Utc => text,
            Clock::WallClock => text.trim_end_matches('Z').to_owned(),
        }
    }
}

/// An hourly UTC series from the epoch, for tests.
#[cfg(test)]
pub(crate) fn hourly(values: Vec<Option<f64>>) -> Series {
    Series {
        start_ns: 0,
        step_ns: 3_600_000_000_000,
        values,
        clock: Clock::Utc,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HOUR: i64 = 3_600_000_000_000;

    #[test]
    fn repeats_are_averaged_and_gaps_left_missing() {
        // 01:00 twice (a clock going back), 03:00 missing (a clock going forward), 04:30 off step.
        let points = [
            (0, 10.0),
            (HOUR, 20.0),
            (HOUR, 40.0),
            (2 * HOUR, 5.0),
            (4 * HOUR + HOUR / 2, 7.0),
        ];
        let (series, notes) = Series::from_points(&points, HOUR, Clock::WallClock).unwrap();
        assert_eq!(
            series.values,
            vec![Some(10.0), Some(30.0), Some(5.0), None, Some(7.0)]
        );
        assert_eq!(
            notes,
            SeriesNotes {
                points: 5,
                steps: 5,
                missing_steps: 1,
                steps_averaged: 1,
                points_off_step: 1,
            }
        );
        assert_eq!(series.last_before(4), Some((2, 5.0)));
        assert_eq!(series.format_time(HOUR), "1970-01-01T01:00:00");
    }

    #[test]
    fn nothing_to_build_from_is_an_error() {
        assert!(Series::from_points(&[], HOUR, Clock::Utc).is_err());
        assert!(Series::from_points(&[(0, 1.0)], 0, Clock::Utc).is_err());
        assert!(Series::from_points(&[(0, 1.0), (i64::MAX / 2, 1.0)], 1, Clock::Utc).is_err());
        assert!(
            Series::from_points(&[(i64::MIN, 1.0), (i64::MAX, 1.0)], HOUR, Clock::Utc).is_err()
        );
    }

    proptest! {
        /// Every point lands on the step it falls in: the steps with a value are exactly the
        /// distinct steps of the points, each the mean of its points, the rest are gaps.
        #[test]
        fn every_point_lands_on_its_step(
            points in prop::collection::vec((0i64..500 * HOUR, -1e6f64..1e6), 1..300),
        ) {
            let (series, notes) = Series::from_points(&points, HOUR, Clock::Utc).unwrap();
            let mut by_step = std::collections::BTreeMap::<i64, Vec<f64>>::new();
            for (at, value) in &points {
                by_step.entry(at / HOUR).or_default().push(*value);
            }
            prop_assert_eq!(notes.steps as usize, series.values.len());
            prop_assert_eq!(notes.missing_steps as usize, series.values.len() - by_step.len());
            for (step, values) in by_step {
                let index = usize::try_from(step * HOUR - series.start_ns).unwrap() / HOUR as usize;
                let mean = values.iter().sum::<f64>() / values.len() as f64;
                let got = series.values[index].unwrap();
                prop_assert!((got - mean).abs() <= 1e-9 * mean.abs().max(1.0), "{got} vs {mean}");
            }
        }
    }
}
