//! Footprint's wire protocol, `footprint.v1`: the `Ingest` stream from collectors to the
//! aggregator and the `Query` service. Generated from `footprint/v1/*.proto` at build time.

#![allow(missing_debug_implementations)]

/// Package `footprint.v1`.
pub mod v1 {
    #![allow(clippy::all, clippy::pedantic)]
    tonic::include_proto!("footprint.v1");
}
