//! Limits on what one collector may send (`[input_limits]`): how large a message, how many
//! items and meters in one, how many batches a second. A message over a limit ends its stream
//! with a status naming the limit (counted as `streams_refused{reason="over_limit"}`); the
//! batch rate is paced instead, so a collector catching up is slowed, never refused. Text fields
//! longer than [`MAX_TEXT_BYTES`] are refused item by item by the writer's checks
//! (`store::validate`), so one long job name costs that job's allocation, not the host's stream.

use std::time::{Duration, Instant};

use footprint_proto::v1::{Batch, Hello};
use serde::{Deserialize, Serialize};
use tonic::Status;

/// The longest text field (meter, device, job id, user, project, …), bytes.
pub const MAX_TEXT_BYTES: usize = 1_024;

/// `[input_limits]` of the aggregator's config.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InputLimits {
    /// The largest gRPC message accepted, bytes (a collector's spool merges at most 8 MiB into one
    /// batch after an outage; keep this above that).
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// Readings, allocations and meter announcements in one batch, together.
    #[serde(default = "default_max_items_per_batch")]
    pub max_items_per_batch: usize,
    /// Meters announced in one message (Hello or batch).
    #[serde(default = "default_max_meters_per_message")]
    pub max_meters_per_message: usize,
    /// Batches a second one collector's stream is served, averaged over a second; faster senders
    /// are paced (their batches wait; nothing is refused). 0: no pacing.
    #[serde(default = "default_max_batches_per_s")]
    pub max_batches_per_s: u32,
}

fn default_max_message_bytes() -> usize {
    64 << 20
}
fn default_max_items_per_batch() -> usize {
    1_000_000
}
fn default_max_meters_per_message() -> usize {
    10_000
}
fn default_max_batches_per_s() -> u32 {
    100
}

impl Default for InputLimits {
    fn default() -> Self {
        Self {
            max_message_bytes: default_max_message_bytes(),
            max_items_per_batch: default_max_items_per_batch(),
            max_meters_per_message: default_max_meters_per_message(),
            max_batches_per_s: default_max_batches_per_s(),
        }
    }
}

/// The smallest `max_message_bytes` allowed: what a collector may legitimately send in one batch.
pub const MIN_MESSAGE_BYTES: usize = 16 << 20;

fn over(field: &str, count: usize, key: &str, limit: usize) -> Status {
    Status::invalid_argument(format!(
        "{field}: {count} is over input_limits.{key} = {limit}"
    ))
}

fn text_over(field: &str, text: &str) -> Option<Status> {
    (text.len() > MAX_TEXT_BYTES).then(|| {
        Status::invalid_argument(format!(
            "{field}: {} bytes is over the limit of {MAX_TEXT_BYTES} bytes",
            text.len()
        ))
    })
}

impl InputLimits {
    /// A Hello within the limits: its identity short, its meters not too many.
    ///
    /// # Errors
    /// `INVALID_ARGUMENT` naming the field and the limit.
    pub fn check_hello(&self, hello: &Hello) -> Result<(), Status> {
        if let Some(status) = text_over("hello.collector_id", &hello.collector_id)
            .or_else(|| text_over("hello.host", &hello.host))
            .or_else(|| text_over("hello.software_version", &hello.software_version))
        {
            return Err(status);
        }
        if hello.meters.len() > self.max_meters_per_message {
            return Err(over(
                "hello.meters",
                hello.meters.len(),
                "max_meters_per_message",
                self.max_meters_per_message,
            ));
        }
        Ok(())
    }

    /// A batch within the limits on counts (text is checked item by item by the writer).
    ///
    /// # Errors
    /// `INVALID_ARGUMENT` naming the field and the limit.
    pub fn check_batch(&self, batch: &Batch) -> Result<(), Status> {
        if batch.meters.len() > self.max_meters_per_message {
            return Err(over(
                "batch.meters",
                batch.meters.len(),
                "max_meters_per_message",
                self.max_meters_per_message,
            ));
        }
        let items = batch.readings.len() + batch.allocations.len() + batch.meters.len();
        if items > self.max_items_per_batch {
            return Err(over(
                "batch",
                items,
                "max_items_per_batch",
                self.max_items_per_batch,
            ));
        }
        Ok(())
    }

    /// The pace of one stream.
    pub fn pacer(&self) -> Pacer {
        Pacer {
            per_s: f64::from(self.max_batches_per_s),
            tokens: f64::from(self.max_batches_per_s),
            filled: Instant::now(),
        }
    }
}

/// A token bucket of one second's batches for one stream.
#[derive(Debug)]
pub struct Pacer {
    per_s: f64,
    tokens: f64,
    filled: Instant,
}

impl Pacer {
    /// How long the next batch must wait for its turn (zero when it may go now), taking it.
    pub fn next_wait(&mut self, now: Instant) -> Duration {
        if self.per_s <= 0.0 {
            return Duration::ZERO;
        }
        let elapsed = now.saturating_duration_since(self.filled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_s).min(self.per_s);
        self.filled = now;
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.per_s)
        }
    }
}

/// The first text field of an allocation (its job's, its devices') over [`MAX_TEXT_BYTES`],
/// named, for the writer's item checks.
pub fn long_text_in_allocation(
    allocation: &footprint_proto::v1::Allocation,
) -> Option<(&'static str, &str)> {
    let job_fields = allocation.job.iter().flat_map(|job| {
        [
            ("job.id", job.id.as_str()),
            ("job.scheduler", job.scheduler.as_str()),
            ("job.name", job.name.as_str()),
            ("job.user", job.user.as_str()),
            ("job.project", job.project.as_str()),
            ("job.model", job.model.as_str()),
            ("job.functional_unit", job.functional_unit.as_str()),
        ]
    });
    let devices = allocation
        .gpus
        .iter()
        .map(|gpu| ("gpus", gpu.as_str()))
        .chain(
            allocation
                .mig
                .iter()
                .map(|m| ("mig[].device", m.device.as_str())),
        );
    job_fields
        .chain(devices)
        .find(|(_, text)| text.len() > MAX_TEXT_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;
    use footprint_proto::v1::{MeterInfo, Reading};

    #[test]
    fn a_batch_over_a_count_is_refused_naming_the_limit() {
        let limits = InputLimits {
            max_items_per_batch: 3,
            max_meters_per_message: 1,
            ..InputLimits::default()
        };
        let mut batch = Batch {
            readings: vec![Reading::default(); 3],
            ..Batch::default()
        };
        limits.check_batch(&batch).unwrap();
        batch.readings.push(Reading::default());
        let refusal = limits.check_batch(&batch).unwrap_err();
        assert!(
            refusal
                .message()
                .contains("4 is over input_limits.max_items_per_batch = 3"),
            "{refusal:?}"
        );
        let hello = Hello {
            meters: vec![MeterInfo::default(); 2],
            ..Hello::default()
        };
        let refusal = limits.check_hello(&hello).unwrap_err();
        assert!(refusal.message().contains("max_meters_per_message"));
        let hello = Hello {
            host: "h".repeat(MAX_TEXT_BYTES + 1),
            ..Hello::default()
        };
        assert!(
            limits
                .check_hello(&hello)
                .unwrap_err()
                .message()
                .starts_with("hello.host")
        );
    }

    #[test]
    fn the_pacer_lets_a_second_of_batches_through_then_spaces_them() {
        let limits = InputLimits {
            max_batches_per_s: 10,
            ..InputLimits::default()
        };
        let mut pacer = limits.pacer();
        let start = pacer.filled;
        for _ in 0..10 {
            assert_eq!(pacer.next_wait(start), Duration::ZERO);
        }
        let wait = pacer.next_wait(start);
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-9, "{wait:?}");
        // A second later the bucket is full again, never fuller.
        let later = start + Duration::from_secs(5);
        for _ in 0..10 {
            assert_eq!(pacer.next_wait(later), Duration::ZERO);
        }
        assert!(pacer.next_wait(later) > Duration::ZERO);

        let unpaced = InputLimits {
            max_batches_per_s: 0,
            ..InputLimits::default()
        };
        let mut pacer = unpaced.pacer();
        for _ in 0..1_000 {
            assert_eq!(pacer.next_wait(start), Duration::ZERO);
        }
    }
}
