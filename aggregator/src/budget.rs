//! Bounds the memory held by batches that were received but are not yet committed, across all
//! streams. Under overload a stream is answered `RESOURCE_EXHAUSTED` instead of queueing without
//! end; the collector backs off with jitter and keeps spooling.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;

/// Budget in KiB units (a semaphore holds at most `u32::MAX >> 3` permits).
#[derive(Debug)]
pub struct IngestBudget {
    semaphore: Arc<Semaphore>,
    total_kib: u32,
    wait: Duration,
}

impl IngestBudget {
    /// A budget of `bytes` (rounded to KiB); a batch waits at most `wait` for room.
    pub fn new(bytes: u64, wait: Duration) -> Self {
        let total_kib = u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .clamp(1, (Semaphore::MAX_PERMITS as u32).min(u32::MAX >> 3));
        Self {
            semaphore: Arc::new(Semaphore::new(total_kib as usize)),
            total_kib,
            wait,
        }
    }

    /// Takes room for a batch of `bytes` (its encoded size) until the permit is dropped.
    ///
    /// # Errors
    /// `RESOURCE_EXHAUSTED` when the batch alone exceeds the budget, or no room freed up in time.
    pub async fn admit(&self, bytes: usize) -> Result<OwnedSemaphorePermit, Status> {
        let kib = u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .max(1);
        if kib > self.total_kib {
            return Err(Status::resource_exhausted(format!(
                "batch: {bytes} bytes is more than the aggregator's whole ingest budget ({} KiB); send smaller batches",
                self.total_kib
            )));
        }
        match tokio::time::timeout(
            self.wait,
            Arc::clone(&self.semaphore).acquire_many_owned(kib),
        )
        .await
        {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(Status::resource_exhausted(format!(
                "aggregator overloaded: {} of {} KiB of batches await their commit; retry with backoff",
                self.total_kib as usize
                    - self
                        .semaphore
                        .available_permits()
                        .min(self.total_kib as usize),
                self.total_kib
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn admits_within_the_budget_and_refuses_beyond_it() {
        let budget = IngestBudget::new(10 * 1024, Duration::from_millis(20));
        let first = budget.admit(6 * 1024).await.expect("fits");
        let refused = budget
            .admit(6 * 1024)
            .await
            .expect_err("over budget while the first is held");
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(
            refused.message().contains("overloaded"),
            "{}",
            refused.message()
        );
        drop(first);
        assert!(
            budget.admit(6 * 1024).await.is_ok(),
            "room again once the first is committed"
        );
        let too_big = budget
            .admit(11 * 1024)
            .await
            .expect_err("larger than the whole budget");
        assert!(
            too_big
                .message()
                .contains("more than the aggregator's whole ingest budget")
        );
    }
}
