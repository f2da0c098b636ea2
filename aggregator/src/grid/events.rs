//! Demand-response events in OpenADR 3's shape (event → intervals → `intervalPeriod` +
//! `payloads`), checked field by field, stored in the ledger (`grid_events`,
//! `grid_event_intervals`), and read back as the intervals in force at an instant.
//!
//! Payload types acted on: `IMPORT_CAPACITY_LIMIT` (kW the site may draw), `SIMPLE` (level 0–3:
//! normal, moderate, high, special) and `GHG` (g/kWh the utility reports for the interval).
//! Others are stored and listed but not acted on, and the answer says so.

use rusqlite::{Connection, params};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Error, Result};

/// Intervals one event may carry.
pub const MAX_INTERVALS: usize = 10_000;

/// An event as received, checked: its intervals with their absolute times.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GridEvent {
    pub id: String,
    pub program_id: String,
    pub event_name: String,
    pub priority: Option<i64>,
    pub intervals: Vec<EventInterval>,
    /// What was clamped or not acted on, in words.
    pub notes: Vec<String>,
}

/// One interval: `[start_ns, end_ns)` (`end_ns` `i64::MAX`: until cancelled) and its payloads.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EventInterval {
    pub start_ns: i64,
    pub end_ns: i64,
    pub payloads: Vec<Payload>,
}

/// One payload value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Payload {
    #[serde(rename = "type")]
    pub kind: String,
    pub value: f64,
}

const ACTED_ON: [&str; 3] = ["IMPORT_CAPACITY_LIMIT", "SIMPLE", "GHG"];

/// Parses and checks an OpenADR 3 event; `floor_kw` is the site's floor (`grid.min_facility_kw`):
/// a capacity limit below it is raised to it, and said.
///
/// # Errors
/// [`Error::BadRequest`] naming the field (`intervals[2].payloads`, `intervalPeriod.duration`,
/// …) and why.
pub fn parse(body: &[u8], floor_kw: Option<f64>) -> Result<GridEvent> {
    let bad = |field: &str, why: &str| Error::BadRequest(format!("{field}: {why}"));
    let event: Value =
        serde_json::from_slice(body).map_err(|e| bad("event", &format!("not JSON: {e}")))?;
    let object = event
        .as_object()
        .ok_or_else(|| bad("event", "must be a JSON object"))?;
    if let Some(kind) = object.get("objectType")
        && kind != "EVENT"
    {
        return Err(bad("objectType", "must be EVENT"));
    }
    let text = |name: &str| -> Result<Option<String>> {
        match object.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.len() <= 128 => Ok(Some(s.clone())),
            Some(Value::String(_)) => Err(bad(name, "longer than 128 characters")),
            Some(_) => Err(bad(name, "must be a string")),
        }
    };
    let program_id = text("programID")?
        .filter(|p| !p.trim().is_empty())
        .ok_or_else(|| bad("programID", "is required"))?;
    let event_name = text("eventName")?.unwrap_or_default();
    let priority = match object.get("priority") {
        None | Some(Value::Null) => None,
        Some(value) => Some(
            value
                .as_i64()
                .ok_or_else(|| bad("priority", "must be an integer"))?,
        ),
    };
    let default_period = match object.get("intervalPeriod") {
        None | Some(Value::Null) => None,
        Some(period) => Some(interval_period(period, "intervalPeriod")?),
    };
    let intervals = object
        .get("intervals")
        .and_then(Value::as_array)
        .filter(|list| !list.is_empty())
        .ok_or_else(|| bad("intervals", "at least one interval is required"))?;
    if intervals.len() > MAX_INTERVALS {
        return Err(bad("intervals", &format!("more than {MAX_INTERVALS}")));
    }
    let mut notes = Vec::new();
    let mut parsed = Vec::with_capacity(intervals.len());
    // Intervals without a period of their own follow each other from the event's.
    let mut next_start = default_period.map(|(start, _)| start);
    for (index, interval) in intervals.iter().enumerate() {
        let field = format!("intervals[{index}]");
        let (start_ns, length) = match interval.get("intervalPeriod") {
            Some(period) if !period.is_null() => {
                interval_period(period, &format!("{field}.intervalPeriod"))?
            }
            _ => match (next_start, default_period) {
                (Some(start), Some((_, length))) => (start, length),
                _ => {
                    return Err(bad(
                        &format!("{field}.intervalPeriod"),
                        "missing, and the event has no intervalPeriod to follow from",
                    ));
                }
            },
        };
        let end_ns = length.map_or(i64::MAX, |ns| start_ns.saturating_add(ns));
        next_start = Some(end_ns);
        let payloads = interval
            .get("payloads")
            .and_then(Value::as_array)
            .filter(|list| !list.is_empty())
            .ok_or_else(|| {
                bad(
                    &format!("{field}.payloads"),
                    "at least one payload is required",
                )
            })?;
        let mut values = Vec::new();
        for (p, payload) in payloads.iter().enumerate() {
            let field = format!("{field}.payloads[{p}]");
            let kind = payload
                .get("type")
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty() && t.len() <= 128)
                .ok_or_else(|| bad(&format!("{field}.type"), "a payload type is required"))?;
            let value = payload
                .get("values")
                .and_then(Value::as_array)
                .and_then(|v| v.first())
                .and_then(Value::as_f64)
                .filter(|v| v.is_finite())
                .ok_or_else(|| bad(&format!("{field}.values"), "needs a number first"))?;
            let value = check_value(kind, value, &field, floor_kw, &mut notes)?;
            if !ACTED_ON.contains(&kind) {
                notes.push(format!(
                    "{field}: payload type {kind} is stored but not acted on"
                ));
            }
            values.push(Payload {
                kind: kind.to_owned(),
                value,
            });
        }
        parsed.push(EventInterval {
            start_ns,
            end_ns,
            payloads: values,
        });
    }
    let id = match text("id")? {
        Some(id) if !id.trim().is_empty() => id,
        _ => {
            let digest = sha2::Sha256::digest(body);
            format!("event-{}", hex(&digest[..8]))
        }
    };
    Ok(GridEvent {
        id,
        program_id,
        event_name,
        priority,
        intervals: parsed,
        notes,
    })
}

use sha2::Digest as _;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A payload value checked against its type: a capacity below the site's floor is raised to
/// it; levels are 0–3; nothing negative.
fn check_value(
    kind: &str,
    value: f64,
    field: &str,
    floor_kw: Option<f64>,
    notes: &mut Vec<String>,
) -> Result<f64> {
    let bad = |why: String| Error::BadRequest(format!("{field}.values: {why}"));
    match kind {
        "IMPORT_CAPACITY_LIMIT" => {
            if value < 0.0 {
                return Err(bad(format!("{value} kW is negative")));
            }
            match floor_kw {
                Some(floor) if value < floor => {
                    notes.push(format!(
                        "{field}: a capacity limit of {value} kW is below the site's floor \
                         (grid.min_facility_kw = {floor}); held at {floor} kW"
                    ));
                    Ok(floor)
                }
                _ => Ok(value),
            }
        }
        "SIMPLE" => {
            if value.fract() != 0.0 || !(0.0..=3.0).contains(&value) {
                return Err(bad(format!("{value} is not a SIMPLE level (0, 1, 2 or 3)")));
            }
            Ok(value)
        }
        "GHG" if value < 0.0 => Err(bad(format!("{value} g/kWh is negative"))),
        _ => Ok(value),
    }
}

/// An `intervalPeriod`: its start, and its length (`None`: until cancelled, OpenADR's
/// `P9999Y`, or no duration given).
fn interval_period(period: &Value, field: &str) -> Result<(i64, Option<i64>)> {
    let start = period
        .get("start")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::BadRequest(format!("{field}.start: a date-time is required")))?;
    let start = footprint_core::time::parse_rfc3339(start)
        .map_err(|e| Error::BadRequest(format!("{field}.start: {e}")))?
        .0;
    let length = match period.get("duration").and_then(Value::as_str) {
        None => None,
        Some(text) => duration_ns(text)
            .map_err(|why| Error::BadRequest(format!("{field}.duration: {text:?} {why}")))?,
    };
    Ok((start, length))
}

/// An ISO 8601 duration in ns (`PT15M`, `PT1H30M`, `P1DT2H`, `P1W`, and the zero-padded
/// `P0Y0M0DT1H0M0S` that openleadr's VTN writes); `None` for OpenADR's "until further notice",
/// `P9999Y` (however padded).
///
/// # Errors
/// Why the text is not such a duration (a count of years or months other than `P9999Y` has no
/// fixed length and is refused).
pub fn duration_ns(text: &str) -> std::result::Result<Option<i64>, String> {
    let body = text.strip_prefix('P').ok_or("does not start with P")?;
    let (date, time) = body.split_once('T').unwrap_or((body, ""));
    let mut total: i64 = 0;
    let mut calendar = (0_i64, 0_i64);
    let mut add = |part: &str, units: &[(char, i64)]| -> std::result::Result<(), String> {
        let mut number = String::new();
        for c in part.chars() {
            if c.is_ascii_digit() {
                number.push(c);
                continue;
            }
            let seconds = units
                .iter()
                .find(|(u, _)| *u == c)
                .map(|(_, s)| *s)
                .ok_or_else(|| format!("has a unit {c:?} this reader does not take"))?;
            let count: i64 = number.parse().map_err(|_| "has a unit without a number")?;
            number.clear();
            // Years and months (date part) have no fixed length: counted apart.
            match seconds {
                0 if c == 'Y' => calendar.0 = count,
                0 => calendar.1 = count,
                _ => {
                    total = count
                        .checked_mul(seconds * 1_000_000_000)
                        .and_then(|ns| total.checked_add(ns))
                        .ok_or("is too long")?;
                }
            }
        }
        if number.is_empty() {
            Ok(())
        } else {
            Err("ends with a number and no unit".into())
        }
    };
    add(
        date,
        &[('Y', 0), ('M', 0), ('W', 7 * 86_400), ('D', 86_400)],
    )?;
    add(time, &[('H', 3_600), ('M', 60), ('S', 1)])?;
    match calendar {
        (9999, 0) if total == 0 => return Ok(None),
        (0, 0) => {}
        _ => return Err("counts years or months, which have no fixed length".into()),
    }
    if total <= 0 {
        return Err("is not a positive duration".into());
    }
    Ok(Some(total))
}

/// Stores `event` (replacing one of the same id), received at `now_ns` from `source`
/// (`posted`, or a VTN's address).
///
/// # Errors
/// A database error.
pub fn store(connection: &Connection, event: &GridEvent, source: &str, now_ns: i64) -> Result<()> {
    connection.execute(
        "DELETE FROM grid_event_intervals WHERE event = ?1",
        [&event.id],
    )?;
    connection.execute(
        "INSERT OR REPLACE INTO grid_events (id, program, name, priority, source, received_ns,
         cancelled_ns, notes) VALUES (?1, ?2, ?3, ?4, ?5, ?6, NULL, ?7)",
        params![
            event.id,
            event.program_id,
            event.event_name,
            event.priority,
            source,
            now_ns,
            event.notes.join("\n")
        ],
    )?;
    let mut insert = connection.prepare_cached(
        "INSERT INTO grid_event_intervals (event, start_ns, end_ns, payload, value)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for interval in &event.intervals {
        for payload in &interval.payloads {
            insert.execute(params![
                event.id,
                interval.start_ns,
                interval.end_ns,
                payload.kind,
                payload.value
            ])?;
        }
    }
    Ok(())
}

/// Ends event `id` at `now_ns` (a VTN deleted it, or an operator cancelled it).
///
/// # Errors
/// [`Error::NotFound`] for an unknown or already cancelled id; a database error.
pub fn cancel(connection: &Connection, id: &str, now_ns: i64) -> Result<()> {
    let changed = connection.execute(
        "UPDATE grid_events SET cancelled_ns = ?2 WHERE id = ?1 AND cancelled_ns IS NULL",
        params![id, now_ns],
    )?;
    if changed == 0 {
        return Err(Error::NotFound(format!(
            "event {id:?} (or it is cancelled already)"
        )));
    }
    Ok(())
}

/// A stored event and how it stands.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StoredEvent {
    pub id: String,
    pub program_id: String,
    pub event_name: String,
    pub priority: Option<i64>,
    pub source: String,
    pub received: String,
    pub cancelled: Option<String>,
    pub notes: Vec<String>,
    pub intervals: Vec<StoredInterval>,
}

/// A stored interval's payload, with its span in RFC 3339 (`end` null: until cancelled).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StoredInterval {
    pub start: String,
    pub end: Option<String>,
    #[serde(rename = "type")]
    pub kind: String,
    pub value: f64,
}

fn time(ns: i64) -> String {
    footprint_core::time::format_rfc3339(footprint_core::UnixNanos(ns))
}

/// Every stored event, newest first; with `active_at`, only the intervals in force then (and
/// the events that have one).
///
/// # Errors
/// A database error.
pub fn list(connection: &Connection, active_at: Option<i64>) -> Result<Vec<StoredEvent>> {
    let mut events = connection.prepare_cached(
        "SELECT id, program, name, priority, source, received_ns, cancelled_ns, notes
         FROM grid_events e
         WHERE ?1 IS NULL OR ((e.cancelled_ns IS NULL OR ?1 < e.cancelled_ns) AND EXISTS (
             SELECT 1 FROM grid_event_intervals i
             WHERE i.event = e.id AND i.start_ns <= ?1 AND ?1 < i.end_ns))
         ORDER BY received_ns DESC, id",
    )?;
    // The signal and the planner ask for the events in force often: only those are read.
    let rows = events.query_map([active_at], |row| {
        let cancelled_ns: Option<i64> = row.get(6)?;
        Ok((
            StoredEvent {
                id: row.get(0)?,
                program_id: row.get(1)?,
                event_name: row.get(2)?,
                priority: row.get(3)?,
                source: row.get(4)?,
                received: time(row.get(5)?),
                cancelled: cancelled_ns.map(time),
                notes: row
                    .get::<_, String>(7)?
                    .lines()
                    .map(str::to_owned)
                    .collect(),
                intervals: Vec::new(),
            },
            cancelled_ns,
        ))
    })?;
    let mut intervals = connection.prepare_cached(
        "SELECT start_ns, end_ns, payload, value FROM grid_event_intervals
         WHERE event = ?1 ORDER BY start_ns, payload",
    )?;
    let mut all = Vec::new();
    for row in rows {
        let (mut event, cancelled_ns) = row?;
        for interval in intervals.query_map([&event.id], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, f64>(3)?,
            ))
        })? {
            let (start, end, kind, value) = interval?;
            let in_force = |at: i64| {
                start <= at && at < end && cancelled_ns.is_none_or(|cancelled| at < cancelled)
            };
            if active_at.is_none_or(in_force) {
                event.intervals.push(StoredInterval {
                    start: time(start),
                    end: (end != i64::MAX).then(|| time(end)),
                    kind,
                    value,
                });
            }
        }
        if active_at.is_none() || !event.intervals.is_empty() {
            all.push(event);
        }
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_openadr_writes_them() {
        assert_eq!(duration_ns("PT15M"), Ok(Some(900_000_000_000)));
        assert_eq!(duration_ns("PT1H30M"), Ok(Some(5_400_000_000_000)));
        assert_eq!(duration_ns("P1DT2H"), Ok(Some(93_600_000_000_000)));
        assert_eq!(duration_ns("P1W"), Ok(Some(604_800_000_000_000)));
        assert_eq!(duration_ns("P9999Y"), Ok(None));
        // As openleadr's VTN writes them.
        assert_eq!(duration_ns("P0Y0M0DT1H0M0S"), Ok(Some(3_600_000_000_000)));
        assert_eq!(duration_ns("P9999Y0M0DT0H0M0S"), Ok(None));
        for bad in ["15M", "P1M", "PT", "PT0S", "PT5", "P1Y", "PTxM"] {
            assert!(duration_ns(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_event_is_read_with_its_intervals_in_sequence() {
        let body = br#"{"objectType": "EVENT", "programID": "dr-1", "eventName": "peak",
            "intervalPeriod": {"start": "2026-12-03T16:00:00Z", "duration": "PT1H"},
            "intervals": [
              {"id": 0, "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [800]}]},
              {"id": 1, "payloads": [{"type": "SIMPLE", "values": [2]}, {"type": "PRICE", "values": [0.4]}]},
              {"id": 2, "intervalPeriod": {"start": "2026-12-03T20:00:00Z", "duration": "P9999Y"},
               "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [100]}]}
            ]}"#;
        let event = parse(body, Some(250.0)).unwrap();
        assert_eq!(event.program_id, "dr-1");
        assert!(event.id.starts_with("event-"));
        let hour = 3_600_000_000_000;
        let start = footprint_core::time::parse_rfc3339("2026-12-03T16:00:00Z")
            .unwrap()
            .0;
        assert_eq!(
            (event.intervals[0].start_ns, event.intervals[0].end_ns),
            (start, start + hour)
        );
        assert_eq!(
            (event.intervals[1].start_ns, event.intervals[1].end_ns),
            (start + hour, start + 2 * hour)
        );
        assert_eq!(event.intervals[2].end_ns, i64::MAX);
        // Below the floor: held at it, and said; an unknown type is kept and said.
        assert_eq!(event.intervals[2].payloads[0].value, 250.0);
        assert_eq!(event.notes.len(), 2, "{:?}", event.notes);
        assert!(event.notes[0].contains("intervals[1].payloads[1]: payload type PRICE"));
        assert!(event.notes[1].contains("below the site's floor"));
    }

    #[test]
    fn a_malformed_event_is_refused_naming_the_field() {
        let cases: [(&str, &str); 9] = [
            ("[]", "event: must be a JSON object"),
            (r#"{"intervals": []}"#, "programID: is required"),
            (
                r#"{"programID": "p", "intervals": []}"#,
                "intervals: at least one",
            ),
            (
                r#"{"programID": "p", "intervals": [{"payloads": [{"type": "SIMPLE", "values": [1]}]}]}"#,
                "intervals[0].intervalPeriod: missing",
            ),
            (
                r#"{"programID": "p", "intervalPeriod": {"start": "2026-01-01T00:00:00Z"}, "intervals": [{"payloads": []}]}"#,
                "intervals[0].payloads: at least one payload",
            ),
            (
                r#"{"programID": "p", "intervalPeriod": {"start": "2026-01-01T00:00:00Z", "duration": "1h"}, "intervals": [{"payloads": [{"type": "SIMPLE", "values": [1]}]}]}"#,
                "intervalPeriod.duration: \"1h\" does not start with P",
            ),
            (
                r#"{"programID": "p", "intervalPeriod": {"start": "2026-01-01T00:00:00Z"}, "intervals": [{"payloads": [{"type": "SIMPLE", "values": [7]}]}]}"#,
                "intervals[0].payloads[0].values: 7 is not a SIMPLE level",
            ),
            (
                r#"{"programID": "p", "intervalPeriod": {"start": "2026-01-01T00:00:00Z"}, "intervals": [{"payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": ["lots"]}]}]}"#,
                "intervals[0].payloads[0].values: needs a number",
            ),
            (
                r#"{"objectType": "PROGRAM", "programID": "p"}"#,
                "objectType: must be EVENT",
            ),
        ];
        for (body, expected) in cases {
            let message = parse(body.as_bytes(), None).unwrap_err().to_string();
            assert!(message.contains(expected), "{body}: {message}");
        }
    }
}
