//! Sources, one file each. A new meter is a new file here plus a variant of
//! [`SourceConfig`](crate::config::SourceConfig).

pub mod ipmi;
pub mod kubernetes;
pub mod modbus;
pub mod nvml;
pub mod power_model;
pub mod process;
pub mod rapl;
pub mod replay;
pub mod site_replay;
pub mod slurm;
pub mod snmp;
pub mod synthetic;
