//! Footprint's wire protocol, `footprint.v1`: the `Ingest` stream from collectors to the
//! aggregator and the `Query` service. Generated from `footprint/v1/*.proto` at build time.

#![allow(missing_debug_implementations)]

/// Package `footprint.v1`.
pub mod v1 {
    #![allow(clippy::all, clippy::pedantic)]
    tonic::include_proto!("footprint.v1");

    impl Reading {
        /// The meter id as text, for messages and lookups by name: bytes that are not UTF-8
        /// (which no announced id is) show as U+FFFD.
        pub fn meter_id_text(&self) -> std::borrow::Cow<'_, str> {
            String::from_utf8_lossy(&self.meter_id)
        }
    }

    impl JobKind {
        /// The name configs, filters and reports use: `training`, `inference` or `other`.
        pub fn short_name(self) -> &'static str {
            match self {
                JobKind::Training => "training",
                JobKind::Inference => "inference",
                JobKind::Other | JobKind::Unspecified => "other",
            }
        }

        /// The kind a short name names; `None` for anything else.
        pub fn from_short_name(name: &str) -> Option<Self> {
            match name {
                "training" => Some(JobKind::Training),
                "inference" => Some(JobKind::Inference),
                "other" => Some(JobKind::Other),
                _ => None,
            }
        }

        /// The short name of a wire value; unknown values are `other`.
        pub fn name_of(kind: i32) -> &'static str {
            JobKind::try_from(kind).map_or("other", JobKind::short_name)
        }
    }
}

/// The kubelet's pod-resources API (package `v1` upstream), vendored: which devices and CPUs
/// each pod's containers hold on a Kubernetes node.
pub mod kubelet_podresources_v1 {
    #![allow(clippy::all, clippy::pedantic)]
    tonic::include_proto!("v1");
}

pub mod tls;
