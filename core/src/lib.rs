//! Footprint's domain, with no I/O: integer units, counter samples turned into deltas (wraparound,
//! resets, implausible jumps), wall-clock-aligned windows, exact integer apportionment and the
//! attribution of a host's energy to the jobs that held its devices, the facility's overhead,
//! water and carbon on top, and the carbon-intensity feeds.
//!
//! Nothing here reads a clock, a disk or a socket, so every invariant (conservation above all)
//! is checked by cheap property tests on random inputs.

pub mod apportion;
pub mod attribution;
pub mod carbon;
pub mod config;
pub mod counter;
pub mod embodied;
pub mod exposition;
pub mod facility;
pub mod quality;
pub mod rng;
pub mod time;
pub mod units;
pub mod window;

pub use quality::{EnergyByQuality, Quality};
pub use units::{MgCo2ePerKwh, MilligramsCo2e, Millijoules, Millilitres, Span, UnixNanos};
