//! Wall-clock-aligned attribution windows, and splitting a counter delta across them.
//!
//! Windows are aligned to the epoch (a 10 s window starts at :00, :10, …) so that every host and
//! every aggregator cuts time at the same instants, and windows from different hosts add up.

use crate::quality::Quality;
use crate::units::{NANOS_PER_SECOND, Span, UnixNanos};

/// The length of an attribution window. Default: 10 s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowLength {
    nanos: i64,
}

impl Default for WindowLength {
    fn default() -> Self {
        Self {
            nanos: 10 * NANOS_PER_SECOND,
        }
    }
}

impl WindowLength {
    /// `None` unless `seconds` is positive.
    pub fn from_seconds(seconds: u32) -> Option<Self> {
        (seconds > 0).then(|| Self {
            nanos: i64::from(seconds) * NANOS_PER_SECOND,
        })
    }

    pub fn nanos(&self) -> i64 {
        self.nanos
    }

    /// Start of the window holding `at`.
    pub fn start_of(&self, at: UnixNanos) -> UnixNanos {
        UnixNanos(at.0 - at.0.rem_euclid(self.nanos))
    }

    /// The window starting at `start`.
    pub fn window_at(&self, start: UnixNanos) -> Span {
        Span::new(start, UnixNanos(start.0.saturating_add(self.nanos)))
    }
}

/// The part of a delta that falls inside a window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeltaShare {
    /// The part of the delta's span inside the window.
    pub span: Span,
    pub amount: u64,
    /// The reading's quality when the whole delta lies in the window; `Interpolated` when it was
    /// cut, since the cut assumes constant power between the two samples.
    pub quality: Quality,
}

/// The share of `amount`, counted over `span`, that falls inside `window`, assuming a constant
/// rate over `span`. Shares are differences of `floor(amount × elapsed / len)`, so the shares of
/// any set of windows that tile `span` add up to `amount` exactly.
pub fn share_in_window(
    span: Span,
    amount: u64,
    quality: Quality,
    window: Span,
) -> Option<DeltaShare> {
    let inside = span.intersect(&window)?;
    if inside == span {
        return Some(DeltaShare {
            span,
            amount,
            quality,
        });
    }
    let cumulative = |at: UnixNanos| -> u64 {
        let elapsed = (at.0 - span.start.0) as u128;
        (u128::from(amount) * elapsed / u128::from(span.len_ns())) as u64
    };
    Some(DeltaShare {
        span: inside,
        amount: cumulative(inside.end) - cumulative(inside.start),
        quality: quality.worst(Quality::Interpolated),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn windows_align_to_the_epoch_including_before_it() {
        let ten = WindowLength::default();
        assert_eq!(
            ten.start_of(UnixNanos(25 * NANOS_PER_SECOND)).0,
            20 * NANOS_PER_SECOND
        );
        assert_eq!(ten.start_of(UnixNanos(-1)).0, -10 * NANOS_PER_SECOND);
        assert_eq!(WindowLength::from_seconds(0), None);
    }

    #[test]
    fn a_delta_inside_one_window_keeps_its_quality() {
        let ten = WindowLength::default();
        let span = Span::new(UnixNanos(1), UnixNanos(9));
        let share = share_in_window(span, 100, Quality::Measured, ten.window_at(UnixNanos(0)));
        assert_eq!(
            share.map(|s| (s.amount, s.quality)),
            Some((100, Quality::Measured))
        );
    }

    proptest! {
        #[test]
        fn shares_across_windows_add_up_exactly(
            start in -1_000_000_000_000i64..1_000_000_000_000,
            len in 1i64..200_000_000_000,
            amount in any::<u64>(),
            window_seconds in 1u32..120,
        ) {
            let windows = WindowLength::from_seconds(window_seconds).unwrap();
            let span = Span::new(UnixNanos(start), UnixNanos(start + len));
            let mut total: u128 = 0;
            let mut covered: u64 = 0;
            let mut window_start = windows.start_of(span.start);
            while window_start < span.end {
                let window = windows.window_at(window_start);
                window_start = window.end;
                let share = share_in_window(span, amount, Quality::Measured, window);
                let share = share.unwrap();
                total += u128::from(share.amount);
                covered += share.span.len_ns();
            }
            prop_assert_eq!(total, u128::from(amount));
            prop_assert_eq!(covered, span.len_ns());
        }
    }
}
