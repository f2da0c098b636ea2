//! `footprint-collector probe`: reads every configured source twice, one sample interval apart,
//! and reports each reading (or why a source failed) as a JSON line, for an operator setting up
//! a host.

use footprint_core::UnixNanos;
use footprint_proto::v1::{MeterInfo, MeterKind, Quality};
use serde::Serialize;

use crate::config::CollectorConfig;
use crate::daemon::build_source;
use crate::time::wall_clock_now;
use footprint_core::time::parse_rfc3339;

/// One line of the probe's output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum ProbeLine {
    Reading {
        meter: String,
        kind: String,
        value: u64,
        unit: &'static str,
        quality: String,
        method: String,
    },
    Failure {
        source: String,
        error: String,
    },
}

/// The unit a meter kind counts in.
pub fn unit_of(kind: MeterKind) -> &'static str {
    match kind {
        MeterKind::SiteWater => "mL",
        MeterKind::JobCpuTime | MeterKind::GpuJobBusy => "ns",
        _ => "mJ",
    }
}

/// `METER_KIND_GPU_ENERGY` → `gpu_energy`.
fn kind_name(kind: i32) -> String {
    MeterKind::try_from(kind)
        .unwrap_or(MeterKind::Unspecified)
        .as_str_name()
        .trim_start_matches("METER_KIND_")
        .to_ascii_lowercase()
}

fn quality_name(quality: i32) -> String {
    Quality::try_from(quality)
        .unwrap_or(Quality::Unspecified)
        .as_str_name()
        .trim_start_matches("QUALITY_")
        .to_ascii_lowercase()
}

/// Probes every source of `config`. Simulated sources start at the config's clock start; real
/// ones read now and again after `sample_interval_ms` of real time.
pub async fn probe(config: &CollectorConfig) -> Vec<ProbeLine> {
    let origin = config
        .clock
        .as_ref()
        .and_then(|clock| parse_rfc3339(&clock.start).ok())
        .unwrap_or_else(wall_clock_now);
    let interval_ns = i64::try_from(config.sample_interval_ms)
        .unwrap_or(i64::MAX / 1_000_000)
        .saturating_mul(1_000_000);
    let mut lines = Vec::new();
    for (index, source_config) in config.sources.iter().enumerate() {
        let label = format!("sources[{index}]");
        let mut source = match build_source(source_config, &config.host, origin) {
            Ok(source) => source,
            Err(error) => {
                lines.push(ProbeLine::Failure {
                    source: label,
                    error,
                });
                continue;
            }
        };
        let mut meters: Vec<MeterInfo> = source.meters();
        for round in 0..2 {
            if round == 1 {
                tokio::time::sleep(std::time::Duration::from_millis(config.sample_interval_ms))
                    .await;
            }
            let at = UnixNanos(origin.0.saturating_add(interval_ns * round));
            match source.sample(at).await {
                Ok(sample) => {
                    meters.extend(sample.meters);
                    for reading in sample.readings {
                        let meter = reading.meter_id_text().into_owned();
                        let info = meters.iter().find(|m| m.meter_id == meter);
                        let kind = info.map_or(0, |m| m.kind);
                        lines.push(ProbeLine::Reading {
                            kind: kind_name(kind),
                            unit: unit_of(MeterKind::try_from(kind).unwrap_or_default()),
                            value: reading.value,
                            quality: quality_name(reading.quality),
                            method: if reading.method.is_empty() {
                                info.map(|m| m.method.clone()).unwrap_or_default()
                            } else {
                                reading.method
                            },
                            meter,
                        });
                    }
                }
                Err(error) => lines.push(ProbeLine::Failure {
                    source: format!("{label} ({})", source.name()),
                    error,
                }),
            }
        }
    }
    lines
}

/// Whether any source produced a reading.
pub fn any_worked(lines: &[ProbeLine]) -> bool {
    lines
        .iter()
        .any(|line| matches!(line, ProbeLine::Reading { .. }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use footprint_core::config::ConfigFile;

    #[tokio::test]
    async fn reads_working_sources_twice_and_reports_the_broken_one() {
        let dir = tempfile::tempdir().unwrap();
        let config = CollectorConfig::from_toml(&format!(
            r#"
            host = "h"
            sample_interval_ms = 10
            [[sources]]
            type = "synthetic"
            meters = 2
            [[sources]]
            type = "rapl"
            root = "{}"
            "#,
            dir.path().display()
        ))
        .unwrap();
        let lines = probe(&config).await;
        let readings: Vec<&ProbeLine> = lines
            .iter()
            .filter(|l| matches!(l, ProbeLine::Reading { .. }))
            .collect();
        assert_eq!(readings.len(), 4, "{lines:?}");
        let json = serde_json::to_string(readings[0]).unwrap();
        assert!(
            json.starts_with(r#"{"meter":"synthetic-0","kind":"gpu_energy","value":"#),
            "{json}"
        );
        assert!(
            json.contains(r#""unit":"mJ","quality":"measured""#),
            "{json}"
        );
        assert!(
            lines.iter().any(|l| matches!(l, ProbeLine::Failure { source, error } if source == "sources[1]" && error.contains("no RAPL package zone"))),
            "{lines:?}"
        );
        assert!(any_worked(&lines));
    }
}
