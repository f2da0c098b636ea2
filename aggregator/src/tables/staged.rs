//! Readings accepted but not yet laid out by meter (`staged_readings`).
//!
//! Putting each reading at its meter's place as it arrives (a row in the `(meter, ts_ns)` B-tree)
//! dirties one page per reading, and writing those pages to the WAL, checkpointing and syncing
//! them was most of what ingest cost (`BENCHMARKS.md`). So the readings a batch had accepted are
//! committed as one record, in the order they were accepted, and laid out by meter later, many
//! readings of a meter at once, when something needs to read them: window building, the site's
//! hours, compaction, a late reading, a restart ([`settle`]). Every reader goes through
//! `tables::series`, which reads laid-out readings only, so whoever reads settles first.
//!
//! A reading lives in exactly one place: here, in `readings` or in `reading_chunks`. Settling
//! deletes the records it laid out in the same transaction.

use rusqlite::Connection;

use super::chunk::{self, ChunkError, Input, StoredReading};
use super::series;
use crate::{Error, Result};

/// Record layout version, the first byte of a record.
const LAYOUT: u8 = 1;

/// One batch's accepted readings, as they will be committed.
#[derive(Debug, Default)]
pub struct StagedRecord {
    bytes: Vec<u8>,
    previous_ts: i64,
}

impl StagedRecord {
    /// Appends an accepted reading of meter `meter` (its key in `meters`).
    pub fn push(&mut self, meter: i64, reading: &StoredReading) {
        if self.bytes.is_empty() {
            self.bytes.push(LAYOUT);
        }
        let out = &mut self.bytes;
        chunk::put_varint(out, chunk::zigzag(meter));
        // A batch is mostly snapshots of every meter at one instant: the time repeats.
        chunk::put_varint(
            out,
            chunk::zigzag(reading.ts_ns.wrapping_sub(self.previous_ts)),
        );
        self.previous_ts = reading.ts_ns;
        chunk::put_varint(out, chunk::zigzag(reading.value));
        chunk::put_varint(out, chunk::zigzag(reading.quality));
        match &reading.method {
            None => out.push(0),
            Some(text) => {
                chunk::put_varint(out, text.len() as u64 + 1);
                out.extend_from_slice(text.as_bytes());
            }
        }
        // The interval mostly starts a tick before the reading: a small number.
        chunk::put_option(out, reading.from_ns.map(|f| reading.ts_ns.wrapping_sub(f)));
        chunk::put_option(out, reading.delta);
        chunk::put_option(out, reading.step);
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Stores the record as `collector`'s (inside the caller's transaction) and starts an empty
    /// one. Nothing is written for an empty record.
    ///
    /// # Errors
    /// A database error.
    pub fn write(&mut self, connection: &Connection, collector: i64) -> Result<()> {
        if self.bytes.is_empty() {
            return Ok(());
        }
        connection
            .prepare_cached("INSERT INTO staged_readings (collector, data) VALUES (?1, ?2)")?
            .execute(rusqlite::params![collector, self.bytes])?;
        self.bytes.clear();
        self.previous_ts = 0;
        Ok(())
    }
}

/// Reads a record back onto the end of `readings`: (meter, reading) in the order they were
/// accepted.
///
/// # Errors
/// The bytes are not a record of a layout this build reads; `readings` is left as it was.
pub fn decode_into(
    bytes: &[u8],
    readings: &mut Vec<(i64, StoredReading)>,
) -> Result<(), ChunkError> {
    let before = readings.len();
    let decoded = decode_onto(bytes, readings);
    if decoded.is_err() {
        readings.truncate(before);
    }
    decoded
}

fn decode_onto(bytes: &[u8], readings: &mut Vec<(i64, StoredReading)>) -> Result<(), ChunkError> {
    let mut input = Input { bytes, at: 0 };
    let layout = input.byte("layout")?;
    if layout != LAYOUT {
        return Err(ChunkError::Layout(layout));
    }
    // Readings take 8 bytes at the least and about 20 as batches carry them.
    readings.reserve(bytes.len() / 16);
    let mut previous_ts = 0i64;
    while input.at < bytes.len() {
        let meter = chunk::unzigzag(input.varint("meter")?);
        let ts_ns = previous_ts.wrapping_add(chunk::unzigzag(input.varint("timestamp")?));
        previous_ts = ts_ns;
        let value = chunk::unzigzag(input.varint("value")?);
        let quality = chunk::unzigzag(input.varint("quality")?);
        let method = match input.length("method", bytes.len() + 1)? {
            0 => None,
            length => Some(input.text(length - 1, "method")?),
        };
        let from_ns = input.option("from_ns")?.map(|d| ts_ns.wrapping_sub(d));
        let delta = input.option("delta")?;
        let step = input.option("step")?;
        readings.push((
            meter,
            StoredReading {
                ts_ns,
                value,
                quality,
                method,
                from_ns,
                delta,
                step,
            },
        ));
    }
    Ok(())
}

/// Lays out the staged readings of `collector` (of every collector when `None`) by meter, as
/// chunks after each meter's last laid-out reading, and deletes their records; returns the
/// readings laid out. Run inside the caller's transaction.
///
/// # Errors
/// A database error, or a record that does not decode (nothing is laid out then).
pub fn settle(connection: &Connection, collector: Option<i64>) -> Result<u64> {
    settle_visiting(connection, collector, |_, _| {})
}

/// [`settle`], showing `visit` each meter's readings as they are laid out: (meter, readings in
/// time order).
///
/// # Errors
/// As [`settle`].
pub fn settle_visiting(
    connection: &Connection,
    collector: Option<i64>,
    mut visit: impl FnMut(i64, &[StoredReading]),
) -> Result<u64> {
    let mut staged: Vec<(i64, StoredReading)> = Vec::new();
    let (select, delete, key) = match collector {
        Some(key) => (
            "SELECT id, data FROM staged_readings WHERE collector = ?1 ORDER BY id",
            "DELETE FROM staged_readings WHERE collector = ?1",
            vec![key],
        ),
        None => (
            "SELECT id, data FROM staged_readings ORDER BY id",
            "DELETE FROM staged_readings",
            Vec::new(),
        ),
    };
    let mut statement = connection.prepare_cached(select)?;
    let mut rows = statement.query(rusqlite::params_from_iter(&key))?;
    while let Some(row) = rows.next()? {
        let id: i64 = row.get(0)?;
        let data = row.get_ref(1)?.as_blob().map_err(rusqlite::Error::from)?;
        decode_into(data, &mut staged)
            .map_err(|error| Error::Server(format!("staged_readings record {id}: {error}")))?;
    }
    drop(rows);
    let settled = staged.len() as u64;
    let (meters, readings): (Vec<i64>, Vec<StoredReading>) = by_meter(&staged)
        .into_iter()
        .map(|index| (staged[index].0, std::mem::take(&mut staged[index].1)))
        .unzip();
    let mut start = 0;
    for run in meters.chunk_by(|a, b| a == b) {
        let end = start + run.len();
        series::append_readings(connection, run[0], &readings[start..end])?;
        visit(run[0], &readings[start..end]);
        start = end;
    }
    connection
        .prepare_cached(delete)?
        .execute(rusqlite::params_from_iter(&key))?;
    Ok(settled)
}

/// The positions of `staged` grouped by meter, each meter's in the order they were accepted
/// (which is their time order). One collector's meters have keys close together, so this is a
/// counting sort; keys spread wider fall back to sorting.
fn by_meter(staged: &[(i64, StoredReading)]) -> Vec<usize> {
    let keys = || staged.iter().map(|(meter, _)| *meter);
    let (Some(low), Some(high)) = (keys().min(), keys().max()) else {
        return Vec::new();
    };
    let slot = |meter: i64| usize::try_from(meter.abs_diff(low)).unwrap_or(usize::MAX);
    if slot(high) > staged.len().saturating_mul(4) {
        let mut pairs: Vec<(i64, usize)> = keys().zip(0..).collect();
        pairs.sort_unstable();
        return pairs.into_iter().map(|(_, index)| index).collect();
    }
    // Where each meter's positions start, then filled in order.
    let mut next = vec![0usize; slot(high) + 2];
    for meter in keys() {
        next[slot(meter) + 1] += 1;
    }
    for i in 1..next.len() {
        next[i] += next[i - 1];
    }
    let mut order = vec![0usize; staged.len()];
    for (index, meter) in keys().enumerate() {
        order[next[slot(meter)]] = index;
        next[slot(meter)] += 1;
    }
    order
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn any_staged() -> impl Strategy<Value = (i64, StoredReading)> {
        (any::<i64>(), super::super::chunk::tests::any_reading())
    }

    fn decode(bytes: &[u8]) -> Result<Vec<(i64, StoredReading)>, ChunkError> {
        let mut readings = Vec::new();
        decode_into(bytes, &mut readings).map(|()| readings)
    }

    fn record(readings: &[(i64, StoredReading)]) -> Vec<u8> {
        let mut record = StagedRecord::default();
        for (meter, reading) in readings {
            record.push(*meter, reading);
        }
        record.bytes
    }

    #[test]
    fn a_cut_record_is_an_error_not_fewer_readings() {
        let reading = StoredReading {
            ts_ns: 1_700_000_000_000_000_000,
            value: 12_345,
            quality: 1,
            method: Some("power integrated".into()),
            from_ns: Some(1_699_999_999_000_000_000),
            delta: Some(300),
            step: Some(0),
        };
        let first_end = record(&[(7, reading.clone())]).len();
        let bytes = record(&[(7, reading.clone()), (8, reading)]);
        assert_eq!(decode(&bytes).map(|r| r.len()), Ok(2));
        // Every cut inside the second reading fails; a cut between readings is a shorter record.
        for cut in (first_end + 1)..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        assert_eq!(decode(&bytes[..first_end]).map(|r| r.len()), Ok(1));
        assert_eq!(decode(&[9]), Err(ChunkError::Layout(9)));
        // What a failing record had decoded is not left behind.
        let mut onto = vec![(1, StoredReading::default())];
        assert!(decode_into(&bytes[..bytes.len() - 1], &mut onto).is_err());
        assert_eq!(onto, vec![(1, StoredReading::default())]);
    }

    const SECOND: i64 = 1_000_000_000;
    /// 20 s before a UTC hour ends.
    const T0: i64 = 1_700_002_800_000_000_000 - 20 * SECOND;

    /// A meter's chain of readings every 10 s from `T0`, `count` long.
    fn chain(count: i64) -> Vec<StoredReading> {
        (0..count)
            .map(|i| StoredReading {
                ts_ns: T0 + i * 10 * SECOND,
                value: 1_000 * i,
                quality: 1,
                method: None,
                from_ns: (i > 0).then(|| T0 + (i - 1) * 10 * SECOND),
                delta: (i > 0).then_some(1_000),
                step: (i > 0).then_some(0),
            })
            .collect()
    }

    #[test]
    fn settled_readings_read_back_per_meter_and_pack_by_hour() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let connection = super::super::schema::open(&dir.path().join("ledger.sqlite"))?;
        let (a, b) = (chain(6), chain(6));
        // Two batches of collector 1 interleaving meters 10 and 11; one of collector 2.
        for (collector, range) in [(1, 0..3), (1, 3..6)] {
            let mut record = StagedRecord::default();
            for i in range {
                record.push(10, &a[i]);
                record.push(11, &b[i]);
            }
            record.write(&connection, collector)?;
        }
        let mut other = StagedRecord::default();
        other.push(20, &a[0]);
        other.write(&connection, 2)?;

        // Only collector 1's records are laid out; reading them needs nothing else.
        assert_eq!(settle(&connection, Some(1))?, 12);
        let everything = footprint_core::Span::new(
            footprint_core::UnixNanos(T0 - 1),
            footprint_core::UnixNanos(T0 + 3_600 * SECOND),
        );
        assert_eq!(series::readings_in(&connection, 10, everything)?, a);
        assert_eq!(series::readings_in(&connection, 11, everything)?, b);
        assert_eq!(series::readings_in(&connection, 20, everything)?, vec![]);
        let staged: i64 =
            connection.query_row("SELECT COUNT(*) FROM staged_readings", [], |r| r.get(0))?;
        assert_eq!(staged, 1);
        // The readings cross an hour: a run on each side of it.
        let runs: i64 = connection.query_row(
            "SELECT COUNT(*) FROM reading_chunks WHERE meter = 10 AND packed = 0",
            [],
            |r| r.get(0),
        )?;
        assert_eq!(runs, 2);
        // A range inside the second run: the readings whose intervals reach into it.
        let late = footprint_core::Span::new(
            footprint_core::UnixNanos(T0 + 35 * SECOND),
            footprint_core::UnixNanos(T0 + 45 * SECOND),
        );
        assert_eq!(
            series::readings_in(&connection, 10, late)?,
            a[4..6].to_vec()
        );

        let first_hour = series::hour_of(T0);
        assert_eq!(
            series::oldest_unpacked_hour(&connection, 10)?,
            Some(first_hour)
        );
        assert_eq!(series::compact_hour(&connection, 10, first_hour)?, 2);
        // Packed already: packing again finds nothing new.
        assert_eq!(series::compact_hour(&connection, 10, first_hour)?, 0);
        assert_eq!(
            series::oldest_unpacked_hour(&connection, 10)?,
            Some(first_hour + 3_600 * SECOND)
        );
        assert_eq!(series::readings_in(&connection, 10, everything)?, a);
        assert_eq!(
            series::last_reading(&connection, 10)?,
            Some((a[5].ts_ns, a[5].value))
        );
        Ok(())
    }

    proptest! {
        #[test]
        fn readings_are_grouped_by_meter_keeping_their_order(
            // Close keys (one collector's: counted) or any (sorted).
            meters in prop_oneof![
                prop::collection::vec(1_000i64..1_040, 0..200),
                prop::collection::vec(any::<i64>(), 0..200),
            ],
        ) {
            let staged: Vec<(i64, StoredReading)> =
                meters.iter().map(|m| (*m, StoredReading::default())).collect();
            let mut expected: Vec<usize> = (0..staged.len()).collect();
            expected.sort_by_key(|&index| staged[index].0);
            prop_assert_eq!(by_meter(&staged), expected);
        }

        #[test]
        fn any_readings_come_back_exactly_in_order(
            readings in prop::collection::vec(any_staged(), 1..64),
        ) {
            prop_assert_eq!(decode(&record(&readings)).unwrap(), readings);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&bytes);
            let mut with_layout = vec![LAYOUT];
            with_layout.extend_from_slice(&bytes);
            let _ = decode(&with_layout);
        }
    }
}
