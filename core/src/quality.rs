//! How a figure was obtained. Every energy figure is carried as an [`EnergyByQuality`], so a total
//! can always say which part of it was measured, interpolated or estimated.

use serde::{Deserialize, Serialize};

/// How a value was obtained, from best to worst.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quality {
    /// Read from a cumulative counter.
    Measured,
    /// Derived from measurements: power integrated over time, or a counter delta split in time
    /// on the assumption that power was constant between two samples.
    Interpolated,
    /// Modelled: a configured factor, an even split for lack of a better signal.
    Estimated,
}

impl Quality {
    /// The worse of two qualities: a figure is only as good as its weakest input.
    pub fn worst(self, other: Quality) -> Quality {
        self.max(other)
    }

    /// `measured`, `interpolated` or `estimated`, as answers spell it.
    pub fn name(self) -> &'static str {
        match self {
            Quality::Measured => "measured",
            Quality::Interpolated => "interpolated",
            Quality::Estimated => "estimated",
        }
    }
}

/// An amount of energy in millijoules, split by how it was obtained.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnergyByQuality {
    pub measured_mj: u64,
    pub interpolated_mj: u64,
    pub estimated_mj: u64,
}

impl EnergyByQuality {
    pub fn add(&mut self, quality: Quality, mj: u64) {
        let slot = match quality {
            Quality::Measured => &mut self.measured_mj,
            Quality::Interpolated => &mut self.interpolated_mj,
            Quality::Estimated => &mut self.estimated_mj,
        };
        *slot += mj;
    }

    pub fn merge(&mut self, other: &EnergyByQuality) {
        self.measured_mj += other.measured_mj;
        self.interpolated_mj += other.interpolated_mj;
        self.estimated_mj += other.estimated_mj;
    }

    pub fn total_mj(&self) -> u64 {
        self.measured_mj + self.interpolated_mj + self.estimated_mj
    }
}
