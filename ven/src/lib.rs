//! A VEN bridge: polls a utility's OpenADR 3 VTN for its demand-response events with LF Energy's
//! `openleadr-client` and relays them to a Footprint aggregator, which turns them into a power
//! budget, a grid signal and GPU caps.
//!
//! Each poll posts the events that are new or changed since the last (`POST
//! /api/v1/grid/events?source=NAME`), cancels those the VTN no longer lists (`DELETE
//! /api/v1/grid/events/{id}`), and reports how the poll went (`PUT
//! /api/v1/grid/sources/NAME`). A VTN that is down or answers garbage changes no event: the
//! last valid ones stay in force until they end, and the aggregator's signal says the source is
//! failing (or silent, once the bridge stops reporting).

pub mod aggregator;
pub mod bridge;

pub use aggregator::Aggregator;
pub use bridge::{Bridge, PollOutcome};
