//! One meter's consecutive readings within one UTC hour (`reading_chunks.data`): either as the
//! ingest path lays them out (the plain layout, written without compression because it is
//! written once per build and soon replaced) or packed by compaction (the same layout, zstd
//! compressed). [`decode`] reads both: the plain layout starts with its layout byte, a zstd
//! frame with its magic number.
//!
//! Each column is laid out on its own so that it compresses on its own. Timestamps and values are
//! delta-of-deltas (zigzag varints): a counter sampled on a steady tick at steady power costs a
//! zero byte per reading for each, which zstd then all but removes. The interval columns are
//! mostly implied by the chain — a reading's interval starts at the previous reading, its delta
//! is the value's growth, its step "advanced" — so only the exceptions are written (the first
//! reading of the chunk, wraps, resets, gaps). Quality and method are runs. Every stored row
//! comes back exactly, whatever it holds: the layout only makes the usual case small.

use thiserror::Error;

/// Layout version, the first byte of the uncompressed form.
const LAYOUT: u8 = 1;
/// zstd level: compaction runs in the writer's idle time, so favour speed.
const ZSTD_LEVEL: i32 = 3;
/// Most readings one chunk may claim, and most bytes it may decompress to: a corrupt chunk
/// cannot make the reader allocate without bound.
const MAX_READINGS: usize = 1 << 20;
const MAX_RAW_BYTES: usize = 64 << 20;

/// A `readings` row, as SQLite holds it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredReading {
    pub ts_ns: i64,
    pub value: i64,
    pub quality: i64,
    pub method: Option<String>,
    pub from_ns: Option<i64>,
    pub delta: Option<i64>,
    pub step: Option<i64>,
}

/// Why a chunk could not be read back.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ChunkError {
    #[error("not zstd, or larger than {MAX_RAW_BYTES} bytes: {0}")]
    Compression(String),
    #[error("layout {0} is not one this build reads")]
    Layout(u8),
    #[error("{0} ends early")]
    Truncated(&'static str),
    #[error("{0} is inconsistent")]
    Corrupt(&'static str),
}

/// Packs `readings` (in time order) into a chunk.
///
/// # Errors
/// zstd failed (it does not on in-memory input; the error is passed on rather than assumed away).
pub fn encode(readings: &[StoredReading]) -> Result<Vec<u8>, ChunkError> {
    zstd::bulk::compress(&encode_raw(readings), ZSTD_LEVEL)
        .map_err(|error| ChunkError::Compression(error.to_string()))
}

/// Unpacks a chunk written by [`encode`] or [`encode_raw`].
///
/// # Errors
/// The bytes are not a chunk of a layout this build reads.
pub fn decode(bytes: &[u8]) -> Result<Vec<StoredReading>, ChunkError> {
    if bytes.first() == Some(&LAYOUT) {
        return decode_raw(bytes);
    }
    let raw = zstd::bulk::decompress(bytes, MAX_RAW_BYTES)
        .map_err(|error| ChunkError::Compression(error.to_string()))?;
    decode_raw(&raw)
}

/// What the chain implies for reading `index`: its interval starts at the previous reading.
fn implied_from(readings: &[StoredReading], index: usize) -> Option<i64> {
    index
        .checked_sub(1)
        .map(|previous| readings[previous].ts_ns)
}

/// … its step is "advanced" when it closes an interval …
fn implied_step(from_ns: Option<i64>) -> Option<i64> {
    from_ns.map(|_| 0)
}

/// … and its delta is the value's growth since the previous reading, when it advanced from it.
fn implied_delta(readings: &[StoredReading], index: usize) -> Option<i64> {
    let reading = &readings[index];
    let previous = readings.get(index.checked_sub(1)?)?;
    (reading.from_ns == Some(previous.ts_ns) && reading.step == Some(0))
        .then(|| reading.value.wrapping_sub(previous.value))
}

/// The uncompressed layout.
pub fn encode_raw(readings: &[StoredReading]) -> Vec<u8> {
    let mut out = Vec::with_capacity(readings.len() * 4 + 16);
    out.push(LAYOUT);
    put_varint(&mut out, readings.len() as u64);
    for column in [|r: &StoredReading| r.ts_ns, |r: &StoredReading| r.value] {
        let mut previous = 0i64;
        let mut previous_step = 0i64;
        for reading in readings {
            let step = column(reading).wrapping_sub(previous);
            put_varint(&mut out, zigzag(step.wrapping_sub(previous_step)));
            previous = column(reading);
            previous_step = step;
        }
    }
    put_exceptions(
        &mut out,
        readings,
        |i| implied_from(readings, i),
        |r| r.from_ns,
    );
    put_exceptions(
        &mut out,
        readings,
        |i| implied_step(readings[i].from_ns),
        |r| r.step,
    );
    put_exceptions(
        &mut out,
        readings,
        |i| implied_delta(readings, i),
        |r| r.delta,
    );
    let quality_runs = runs(readings, |r| &r.quality);
    put_varint(&mut out, quality_runs.len() as u64);
    for (length, quality) in quality_runs {
        put_varint(&mut out, length as u64);
        put_varint(&mut out, zigzag(*quality));
    }
    let method_runs = runs(readings, |r| &r.method);
    put_varint(&mut out, method_runs.len() as u64);
    for (length, method) in method_runs {
        put_varint(&mut out, length as u64);
        match method {
            None => out.push(0),
            Some(text) => {
                out.push(1);
                put_varint(&mut out, text.len() as u64);
                out.extend_from_slice(text.as_bytes());
            }
        }
    }
    out
}

/// Writes a column as the readings where it differs from what the chain implies: their count,
/// then for each the distance from the previous one and the value.
fn put_exceptions(
    out: &mut Vec<u8>,
    readings: &[StoredReading],
    implied: impl Fn(usize) -> Option<i64>,
    actual: impl Fn(&StoredReading) -> Option<i64>,
) {
    let differs = |index: usize| implied(index) != actual(&readings[index]);
    put_varint(
        out,
        (0..readings.len()).filter(|&i| differs(i)).count() as u64,
    );
    let mut last = 0usize;
    for index in (0..readings.len()).filter(|&i| differs(i)) {
        put_varint(out, (index - last) as u64);
        last = index;
        put_option(out, actual(&readings[index]));
    }
}

/// Reads the uncompressed layout back.
///
/// # Errors
/// The bytes end early or contradict themselves.
pub fn decode_raw(raw: &[u8]) -> Result<Vec<StoredReading>, ChunkError> {
    let mut input = Input { bytes: raw, at: 0 };
    let layout = input.byte("layout")?;
    if layout != LAYOUT {
        return Err(ChunkError::Layout(layout));
    }
    let count = input.varint("count")?;
    let count = usize::try_from(count)
        .ok()
        .filter(|&c| c <= MAX_READINGS && c <= raw.len())
        .ok_or(ChunkError::Corrupt("count"))?;
    let mut readings = vec![StoredReading::default(); count];
    for (name, set) in [
        (
            "timestamps",
            (|r: &mut StoredReading, v: i64| r.ts_ns = v) as fn(&mut StoredReading, i64),
        ),
        ("values", |r: &mut StoredReading, v: i64| r.value = v),
    ] {
        let mut previous = 0i64;
        let mut previous_step = 0i64;
        for reading in &mut readings {
            let step = previous_step.wrapping_add(unzigzag(input.varint(name)?));
            previous = previous.wrapping_add(step);
            previous_step = step;
            set(reading, previous);
        }
    }
    for index in 0..count {
        readings[index].from_ns = implied_from(&readings, index);
    }
    apply_exceptions(&mut input, &mut readings, "from_ns", |r, v| r.from_ns = v)?;
    for reading in &mut readings {
        reading.step = implied_step(reading.from_ns);
    }
    apply_exceptions(&mut input, &mut readings, "step", |r, v| r.step = v)?;
    for index in 0..count {
        readings[index].delta = implied_delta(&readings, index);
    }
    apply_exceptions(&mut input, &mut readings, "delta", |r, v| r.delta = v)?;
    let mut filled = 0usize;
    for _ in 0..input.varint("quality runs")? {
        let length = input.length("quality runs", count - filled)?;
        let quality = unzigzag(input.varint("quality")?);
        for reading in &mut readings[filled..filled + length] {
            reading.quality = quality;
        }
        filled += length;
    }
    if filled != count {
        return Err(ChunkError::Corrupt("quality runs"));
    }
    filled = 0;
    for _ in 0..input.varint("method runs")? {
        let length = input.length("method runs", count - filled)?;
        let method = match input.byte("method")? {
            0 => None,
            1 => {
                let bytes = input.length("method", raw.len())?;
                Some(input.text(bytes, "method")?)
            }
            _ => return Err(ChunkError::Corrupt("method")),
        };
        for reading in &mut readings[filled..filled + length] {
            reading.method.clone_from(&method);
        }
        filled += length;
    }
    if filled != count {
        return Err(ChunkError::Corrupt("method runs"));
    }
    if input.at != raw.len() {
        return Err(ChunkError::Corrupt("trailing bytes"));
    }
    Ok(readings)
}

fn apply_exceptions(
    input: &mut Input<'_>,
    readings: &mut [StoredReading],
    name: &'static str,
    set: impl Fn(&mut StoredReading, Option<i64>),
) -> Result<(), ChunkError> {
    let mut index = 0usize;
    for number in 0..input.varint(name)? {
        let gap = usize::try_from(input.varint(name)?).map_err(|_| ChunkError::Corrupt(name))?;
        // Indices strictly increase after the first.
        if number > 0 && gap == 0 {
            return Err(ChunkError::Corrupt(name));
        }
        index = index.checked_add(gap).ok_or(ChunkError::Corrupt(name))?;
        let value = input.option(name)?;
        set(
            readings.get_mut(index).ok_or(ChunkError::Corrupt(name))?,
            value,
        );
    }
    Ok(())
}

/// Runs of equal `key`: (length, key).
fn runs<T: PartialEq>(
    readings: &[StoredReading],
    key: impl Fn(&StoredReading) -> &T,
) -> Vec<(usize, &T)> {
    let mut runs: Vec<(usize, &T)> = Vec::new();
    for reading in readings {
        match runs.last_mut() {
            Some((length, value)) if *value == key(reading) => *length += 1,
            _ => runs.push((1, key(reading))),
        }
    }
    runs
}

pub(super) fn put_option(out: &mut Vec<u8>, value: Option<i64>) {
    match value {
        None => out.push(0),
        Some(value) => {
            out.push(1);
            put_varint(out, zigzag(value));
        }
    }
}

pub(super) fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

pub(super) fn unzigzag(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

pub(super) fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

pub(super) struct Input<'a> {
    pub(super) bytes: &'a [u8],
    pub(super) at: usize,
}

impl<'a> Input<'a> {
    pub(super) fn byte(&mut self, name: &'static str) -> Result<u8, ChunkError> {
        let byte = *self.bytes.get(self.at).ok_or(ChunkError::Truncated(name))?;
        self.at += 1;
        Ok(byte)
    }

    fn take(&mut self, length: usize, name: &'static str) -> Result<&'a [u8], ChunkError> {
        let end = self
            .at
            .checked_add(length)
            .ok_or(ChunkError::Corrupt(name))?;
        let taken = self
            .bytes
            .get(self.at..end)
            .ok_or(ChunkError::Truncated(name))?;
        self.at = end;
        Ok(taken)
    }

    /// `length` bytes of UTF-8 text.
    pub(super) fn text(&mut self, length: usize, name: &'static str) -> Result<String, ChunkError> {
        String::from_utf8(self.take(length, name)?.to_vec()).map_err(|_| ChunkError::Corrupt(name))
    }

    pub(super) fn varint(&mut self, name: &'static str) -> Result<u64, ChunkError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.byte(name)?;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(ChunkError::Corrupt(name))
    }

    /// An optional number, as [`put_option`] writes it.
    pub(super) fn option(&mut self, name: &'static str) -> Result<Option<i64>, ChunkError> {
        match self.byte(name)? {
            0 => Ok(None),
            1 => Ok(Some(unzigzag(self.varint(name)?))),
            _ => Err(ChunkError::Corrupt(name)),
        }
    }

    /// A length no larger than `most`.
    pub(super) fn length(&mut self, name: &'static str, most: usize) -> Result<usize, ChunkError> {
        usize::try_from(self.varint(name)?)
            .ok()
            .filter(|&length| length <= most)
            .ok_or(ChunkError::Corrupt(name))
    }
}

#[cfg(test)]
pub(super) mod tests {
    use proptest::prelude::*;

    use super::*;

    /// A meter's chain as the writer stores it: 1 s ticks, steady power, one wrap.
    fn chain(count: usize) -> Vec<StoredReading> {
        let mut readings: Vec<StoredReading> = Vec::new();
        for index in 0..count {
            let ts_ns = 1_700_000_000_000_000_000 + index as i64 * 1_000_000_000;
            let value = (index as i64 * 300_000) % 50_000_000;
            let previous = readings.last();
            let (step, delta) = match previous {
                None => (None, None),
                Some(p) if value < p.value => (Some(1), Some(50_000_000 - p.value + 1 + value)),
                Some(p) => (Some(0), Some(value - p.value)),
            };
            readings.push(StoredReading {
                ts_ns,
                value,
                quality: 1,
                method: None,
                from_ns: previous.map(|p| p.ts_ns),
                delta,
                step,
            });
        }
        readings
    }

    #[test]
    fn a_steady_chain_packs_to_a_fraction_of_a_byte_per_reading() -> Result<(), ChunkError> {
        let readings = chain(3_600);
        let bytes = encode(&readings)?;
        assert_eq!(decode(&bytes)?, readings);
        assert!(bytes.len() < 3_600 / 4, "{} bytes", bytes.len());
        Ok(())
    }

    #[test]
    fn a_plain_chunk_reads_back_like_a_packed_one() -> Result<(), ChunkError> {
        let readings = chain(100);
        assert_eq!(decode(&encode_raw(&readings))?, readings);
        assert_eq!(decode(&encode(&readings)?)?, readings);
        Ok(())
    }

    #[test]
    fn corrupt_chunks_are_errors_naming_the_column() {
        let raw = encode_raw(&chain(10));
        for cut in 0..raw.len() {
            assert!(decode_raw(&raw[..cut]).is_err(), "cut at {cut}");
        }
        let mut trailing = raw.clone();
        trailing.push(0);
        assert_eq!(
            decode_raw(&trailing),
            Err(ChunkError::Corrupt("trailing bytes"))
        );
        let mut layout = raw;
        layout[0] = 9;
        assert_eq!(decode_raw(&layout), Err(ChunkError::Layout(9)));
        assert!(matches!(
            decode(b"not zstd"),
            Err(ChunkError::Compression(_))
        ));
    }

    /// Any reading a column may hold, however unlikely.
    pub(in crate::tables) fn any_reading() -> impl Strategy<Value = StoredReading> {
        (
            any::<i64>(),
            any::<i64>(),
            0i64..4,
            prop::option::of("[a-z ]{0,12}"),
            prop::option::of(any::<i64>()),
            prop::option::of(any::<i64>()),
            prop::option::of(0i64..32),
        )
            .prop_map(|(ts_ns, value, quality, method, from_ns, delta, step)| {
                StoredReading {
                    ts_ns,
                    value,
                    quality,
                    method,
                    from_ns,
                    delta,
                    step,
                }
            })
    }

    proptest! {
        #[test]
        fn any_rows_come_back_exactly(readings in prop::collection::vec(any_reading(), 0..64)) {
            prop_assert_eq!(decode(&encode(&readings).unwrap()).unwrap(), readings);
        }

        #[test]
        fn chains_with_wraps_resets_and_gaps_come_back_exactly(
            count in 1usize..300,
            edits in prop::collection::vec((0usize..300, 0u8..4, any::<i64>()), 0..8),
        ) {
            let mut readings = chain(count);
            for (index, edit, value) in edits {
                let Some(reading) = readings.get_mut(index % count) else { continue };
                match edit {
                    0 => reading.step = Some(2),
                    1 => reading.delta = Some(value),
                    2 => reading.method = Some("power integrated".into()),
                    _ => reading.quality = 2,
                }
            }
            prop_assert_eq!(decode(&encode(&readings).unwrap()).unwrap(), readings);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_raw(&bytes);
            let _ = decode(&bytes);
            // Past the layout byte, into the columns.
            let mut raw = vec![LAYOUT];
            raw.extend_from_slice(&bytes);
            let _ = decode_raw(&raw);
        }
    }
}
