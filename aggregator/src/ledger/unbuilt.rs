//! The intervals a host's next build reads, kept in memory between builds.
//!
//! A build reads every energy meter's intervals from the host's built windows on. Most of them
//! were laid out by the settling that starts the same build (`tables::staged`), and the rest
//! (the few readings past the last window boundary) by the build before. Reading them back from
//! the chunks just written was a tenth of ingest's CPU (`BENCHMARKS.md`), so the writer keeps
//! what the last build left over, adds what settling lays out, and builds from that.
//!
//! It is only a copy: the writer drops it whenever anything else changes the host's laid-out
//! readings (late data, a rebuild, a reload, settling for another reader), and the next build
//! reads the database instead ([`UnbuiltIntervals::load`]). Debug builds check every build made
//! from it against what the database holds.

use footprint_core::{Span, UnixNanos};
use rusqlite::Connection;

use super::{HostLayout, Interval, interval_of, load_intervals};
use crate::Result;
use crate::tables::chunk::StoredReading;

/// Intervals of several meters in one list, each meter's together and in time order.
#[derive(Clone, Debug, Default)]
pub struct IntervalsByMeter {
    /// (meter key, where its intervals end in `intervals`), in the order they were added.
    meters: Vec<(i64, usize)>,
    intervals: Vec<Interval>,
    /// Whether meters were added in ascending key order (settling adds them so), which lets
    /// lookups halve.
    ascending: bool,
}

impl IntervalsByMeter {
    /// Adds the intervals of `meter`'s readings, in time order, after the meters added before.
    pub fn push_readings(&mut self, meter: i64, readings: &[StoredReading]) {
        self.push(meter, readings.iter().filter_map(interval_of));
    }

    fn push(&mut self, meter: i64, intervals: impl IntoIterator<Item = Interval>) {
        self.ascending = match self.meters.last() {
            None => true,
            Some(&(last, _)) => self.ascending && last < meter,
        };
        self.intervals.extend(intervals);
        self.meters.push((meter, self.intervals.len()));
    }

    /// The intervals of `meter` (none if it was not added).
    fn of(&self, meter: i64) -> &[Interval] {
        let position = if self.ascending {
            self.meters
                .binary_search_by_key(&meter, |&(key, _)| key)
                .ok()
        } else {
            self.meters.iter().position(|&(key, _)| key == meter)
        };
        let Some(position) = position else {
            return &[];
        };
        let start = position.checked_sub(1).map_or(0, |p| self.meters[p].1);
        &self.intervals[start..self.meters[position].1]
    }

    fn len(&self) -> usize {
        self.intervals.len()
    }
}

/// Every interval of a host's energy meters that ends after `from_ns`, each meter's in time
/// order.
#[derive(Clone, Debug)]
pub struct UnbuiltIntervals {
    from_ns: i64,
    held: IntervalsByMeter,
}

impl UnbuiltIntervals {
    /// Reads them from the database, when the host's meters are all near `from_ns` (a meter far
    /// ahead of the slowest would bring its whole lead into memory). `None` otherwise.
    ///
    /// # Errors
    /// A database error.
    pub fn load(
        connection: &Connection,
        host: &HostLayout,
        from_ns: i64,
        window_ns: i64,
    ) -> Result<Option<Self>> {
        let near = |meter: &super::LayoutMeter| {
            meter
                .last_ns
                .is_none_or(|last| last.saturating_sub(from_ns) <= window_ns)
        };
        if !host.meters.iter().all(near) {
            return Ok(None);
        }
        let after = Span::new(UnixNanos(from_ns), UnixNanos(i64::MAX));
        let mut held = IntervalsByMeter::default();
        for key in sorted_keys(host) {
            held.push(key, load_intervals(connection, key, after)?);
        }
        Ok(Some(Self { from_ns, held }))
    }

    /// Where the host's next build starts, for these to be what it reads.
    pub fn from_ns(&self) -> i64 {
        self.from_ns
    }

    /// How many intervals are held.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.len() == 0
    }

    /// These followed by the intervals of readings laid out after them, for each energy meter of
    /// `host` (a meter announced since has only those).
    #[must_use]
    pub fn followed_by(self, host: &HostLayout, laid_out: &IntervalsByMeter) -> Self {
        let mut held = IntervalsByMeter::default();
        held.intervals.reserve(self.len() + laid_out.len());
        for key in sorted_keys(host) {
            let (before, after) = (self.held.of(key), laid_out.of(key));
            held.push(key, before.iter().chain(after).copied());
        }
        Self {
            from_ns: self.from_ns,
            held,
        }
    }

    /// The intervals of `meter` that reach into `span`, as the database would give them.
    pub(crate) fn reaching_into(&self, meter: i64, span: Span) -> &[Interval] {
        let intervals = self.held.of(meter);
        let first = intervals.partition_point(|i| i.span.end <= span.start);
        let end = first + intervals[first..].partition_point(|i| i.span.start < span.end);
        &intervals[first..end]
    }

    /// What builds from `from_ns` on read: drops what windows before it needed.
    #[must_use]
    pub fn starting_at(self, from_ns: i64) -> Self {
        let mut held = IntervalsByMeter::default();
        for &(key, _) in &self.held.meters {
            let intervals = self.held.of(key);
            let done = intervals.partition_point(|i| i.span.end.0 <= from_ns);
            held.push(key, intervals[done..].iter().copied());
        }
        Self { from_ns, held }
    }
}

fn sorted_keys(host: &HostLayout) -> Vec<i64> {
    let mut keys: Vec<i64> = host.meters.iter().map(|m| m.key).collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

#[cfg(test)]
mod tests {
    use footprint_proto::v1::MeterKind;
    use proptest::prelude::*;

    use super::*;
    use crate::ledger::LayoutMeter;
    use crate::tables::{schema, series};

    const SECOND: i64 = 1_000_000_000;
    const T0: i64 = 1_700_000_000 * SECOND;

    fn host(keys: &[i64]) -> HostLayout {
        HostLayout {
            collector: 1,
            meters: keys
                .iter()
                .map(|&key| LayoutMeter {
                    key,
                    kind: MeterKind::GpuEnergy,
                    device: format!("gpu{key}"),
                    cpus: Vec::new(),
                    model: String::new(),
                    last_ns: None,
                })
                .collect(),
            usage: Vec::new(),
            built_until: None,
        }
    }

    /// A meter's readings `steps` apart (in ms) from `T0`; the first closes no interval.
    fn chain(steps: &[i64]) -> Vec<StoredReading> {
        let mut ts = T0;
        steps
            .iter()
            .enumerate()
            .map(|(i, step)| {
                let from = ts;
                ts += step * 1_000_000;
                StoredReading {
                    ts_ns: ts,
                    value: i as i64 * 7,
                    quality: 1,
                    method: None,
                    from_ns: (i > 0).then_some(from),
                    delta: (i > 0).then_some(7),
                    step: (i > 0).then_some(0),
                }
            })
            .collect()
    }

    proptest! {
        /// Held intervals, loaded, followed by later ones and moved on, give every span from
        /// where they start what the database gives.
        #[test]
        fn held_intervals_read_like_the_database(
            meters in prop::collection::vec(
                (prop::collection::vec(1i64..40_000, 1..40), 0usize..40),
                1..4,
            ),
            held_from_ms in 0i64..200_000,
            moved_ms in 0i64..200_000,
            spans in prop::collection::vec((0i64..900_000, 1i64..120_000), 1..8),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let connection = schema::open(&dir.path().join("ledger.sqlite")).unwrap();
            // Meter keys out of their announcement order, as a host's may be.
            let keys: Vec<i64> = (0..meters.len() as i64).map(|i| 30 - 10 * i).collect();
            let layout = host(&keys);
            let chains: Vec<Vec<StoredReading>> =
                meters.iter().map(|(steps, _)| chain(steps)).collect();
            for ((key, readings), (_, split)) in keys.iter().zip(&chains).zip(&meters) {
                let split = (*split).min(readings.len());
                series::append_readings(&connection, *key, &readings[..split]).unwrap();
            }
            let held_from = T0 + held_from_ms * 1_000_000;
            let held = UnbuiltIntervals::load(&connection, &layout, held_from, i64::MAX)
                .unwrap()
                .unwrap();
            // The rest is laid out in ascending meter order, as settling shows it.
            let mut laid_out = IntervalsByMeter::default();
            let mut order: Vec<usize> = (0..keys.len()).collect();
            order.sort_by_key(|&i| keys[i]);
            for i in order {
                let split = meters[i].1.min(chains[i].len());
                series::append_readings(&connection, keys[i], &chains[i][split..]).unwrap();
                laid_out.push_readings(keys[i], &chains[i][split..]);
            }
            let held = held.followed_by(&layout, &laid_out);
            let moved = held_from + moved_ms * 1_000_000;
            let (before, after) = (held.clone(), held.starting_at(moved));
            for (held, from) in [(&before, held_from), (&after, moved)] {
                prop_assert_eq!(held.from_ns(), from);
                for &(start_ms, length_ms) in &spans {
                    let start = from + start_ms * 1_000_000;
                    let span = Span::new(UnixNanos(start), UnixNanos(start + length_ms * 1_000_000));
                    for &key in &keys {
                        prop_assert_eq!(
                            held.reaching_into(key, span),
                            &load_intervals(&connection, key, span).unwrap()[..],
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn each_meter_finds_its_own_intervals_in_any_order_added() {
        let (three, seven) = (chain(&[1, 5, 5]), chain(&[1, 5]));
        let intervals = |readings: &[StoredReading]| -> Vec<Interval> {
            readings.iter().filter_map(interval_of).collect()
        };
        for order in [[3, 7], [7, 3]] {
            let mut list = IntervalsByMeter::default();
            for meter in order {
                list.push_readings(meter, if meter == 3 { &three } else { &seven });
            }
            assert_eq!(list.of(3), &intervals(&three)[..], "{order:?}");
            assert_eq!(list.of(7), &intervals(&seven)[..], "{order:?}");
            assert_eq!(list.of(5), &[], "{order:?}");
        }
    }

    #[test]
    fn a_meter_far_ahead_of_where_building_starts_is_not_held() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let connection = schema::open(&dir.path().join("ledger.sqlite"))?;
        let mut layout = host(&[1, 2]);
        layout.meters[0].last_ns = Some(T0 + 5 * SECOND);
        layout.meters[1].last_ns = Some(T0 + 11 * SECOND);
        assert!(UnbuiltIntervals::load(&connection, &layout, T0, 10 * SECOND)?.is_none());
        layout.meters[1].last_ns = Some(T0 + 10 * SECOND);
        assert!(UnbuiltIntervals::load(&connection, &layout, T0, 10 * SECOND)?.is_some());
        Ok(())
    }
}
