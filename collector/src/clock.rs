//! The collector's clock: the wall clock in production, or a simulated clock that runs faster
//! (a day in a minute) for replays and demos. Sources never read time themselves: they are told
//! the instant they sample, which is what makes a replay reproducible.

use std::time::Duration;

use footprint_core::UnixNanos;
use tokio::time::Instant;

use crate::time::wall_clock_now;

#[derive(Clone, Debug)]
pub enum Clock {
    Wall,
    /// Simulated time `origin + (real elapsed × speed)`.
    Simulated {
        origin: UnixNanos,
        started: Instant,
        speed: f64,
    },
}

impl Clock {
    /// A simulated clock reading `origin` now, or — given `real_start`, a wall-clock instant — as
    /// it read `origin` at `real_start` (so a restarted process continues the same timeline).
    pub fn simulated(origin: UnixNanos, speed: f64, real_start: Option<UnixNanos>) -> Self {
        let now = Instant::now();
        let started = match real_start {
            Some(real_start) => {
                let ago_ns = wall_clock_now().0.saturating_sub(real_start.0).max(0);
                now.checked_sub(std::time::Duration::from_nanos(ago_ns as u64))
                    .unwrap_or(now)
            }
            None => now,
        };
        Clock::Simulated {
            origin,
            started,
            speed,
        }
    }

    pub fn now(&self) -> UnixNanos {
        match self {
            Clock::Wall => wall_clock_now(),
            Clock::Simulated {
                origin,
                started,
                speed,
            } => {
                let elapsed = started.elapsed().as_nanos() as f64 * speed;
                UnixNanos(origin.0.saturating_add(elapsed as i64))
            }
        }
    }

    /// Sleeps until the clock reads `at` (returns at once if it already does).
    pub async fn sleep_until(&self, at: UnixNanos) {
        let ahead_ns = at.0.saturating_sub(self.now().0);
        if ahead_ns <= 0 {
            return;
        }
        let real_ns = match self {
            Clock::Wall => ahead_ns as f64,
            Clock::Simulated { speed, .. } => ahead_ns as f64 / speed,
        };
        tokio::time::sleep(Duration::from_nanos(real_ns as u64)).await;
    }
}
