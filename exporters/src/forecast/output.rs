//! A forecast as a file: JSON (everything), CSV (`timestamp,p10_kw,p50_kw,p90_kw`), the
//! OpenADR 3 report shape a VEN sends for `USAGE_FORECAST`, or the chart.

use serde_json::{Value, json};

use super::{Forecast, ForecastError};

/// The formats a forecast is written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Csv,
    OpenAdr,
    /// The chart ([`super::chart`]).
    Svg,
}

impl Format {
    /// `json`, `csv` or `openadr`.
    ///
    /// # Errors
    /// [`ForecastError::Input`] naming the parameter for anything else.
    pub fn parse(text: &str) -> Result<Self, ForecastError> {
        match text {
            "" | "json" => Ok(Self::Json),
            "csv" => Ok(Self::Csv),
            "openadr" => Ok(Self::OpenAdr),
            "svg" => Ok(Self::Svg),
            other => Err(ForecastError::Input(format!(
                "format: {other:?} is not json, csv, openadr or svg"
            ))),
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Csv => "text/csv; charset=utf-8",
            Self::Svg => "image/svg+xml",
            Self::Json | Self::OpenAdr => "application/json",
        }
    }
}

/// Who the OpenADR report is from and for: a VEN's report names the program and event it
/// answers and the VEN's client name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpenAdrIds {
    pub program_id: String,
    pub event_id: String,
    pub client_name: String,
}

/// `forecast` in `format`.
pub fn render(forecast: &Forecast, format: Format, ids: &OpenAdrIds) -> Vec<u8> {
    match format {
        Format::Json => {
            let mut text = serde_json::to_string_pretty(forecast).unwrap_or_default();
            text.push('\n');
            text.into_bytes()
        }
        Format::Csv => csv(forecast).into_bytes(),
        Format::Svg => super::chart::forecast_svg(forecast).into_bytes(),
        Format::OpenAdr => {
            let mut text =
                serde_json::to_string_pretty(&openadr(forecast, ids)).unwrap_or_default();
            text.push('\n');
            text.into_bytes()
        }
    }
}

/// `timestamp,p10_kw,p50_kw,p90_kw`, one row per step.
pub fn csv(forecast: &Forecast) -> String {
    let mut text = String::from("timestamp,p10_kw,p50_kw,p90_kw\n");
    for point in &forecast.points {
        text.push_str(&format!(
            "{},{},{},{}\n",
            point.timestamp, point.p10_kw, point.p50_kw, point.p90_kw
        ));
    }
    text
}

/// The OpenADR 3 report (`objectType: REPORT`): one resource (the site) with one interval per
/// step. `USAGE_FORECAST` carries the P50, the standard payload a VTN reads; the band rides in
/// two private payload types, `USAGE_FORECAST_P10` and `USAGE_FORECAST_P90`, each described in
/// `payloadDescriptors` (OpenADR 3 allows private payload-type strings).
pub fn openadr(forecast: &Forecast, ids: &OpenAdrIds) -> Value {
    let descriptor = |payload_type: &str| {
        json!({
            "objectType": "REPORT_PAYLOAD_DESCRIPTOR",
            "payloadType": payload_type,
            "readingType": "FORECAST",
            "units": "KW",
        })
    };
    let duration = forecast.step.clone();
    let intervals: Vec<Value> = forecast
        .points
        .iter()
        .enumerate()
        .map(|(id, point)| {
            json!({
                "id": id,
                "intervalPeriod": {"start": utc(&point.timestamp), "duration": duration},
                "payloads": [
                    {"type": "USAGE_FORECAST", "values": [point.p50_kw]},
                    {"type": "USAGE_FORECAST_P10", "values": [point.p10_kw]},
                    {"type": "USAGE_FORECAST_P90", "values": [point.p90_kw]},
                ],
            })
        })
        .collect();
    let or = |text: &str, default: &str| {
        if text.is_empty() {
            default.to_owned()
        } else {
            text.to_owned()
        }
    };
    json!({
        "objectType": "REPORT",
        "programID": or(&ids.program_id, "footprint-usage-forecast"),
        "eventID": or(&ids.event_id, "usage-forecast"),
        "clientName": or(&ids.client_name, &forecast.site),
        "reportName": format!("{} facility draw, next {} steps from {} ({})", forecast.site, forecast.points.len(), forecast.origin, forecast.model.name),
        "payloadDescriptors": [
            descriptor("USAGE_FORECAST"),
            descriptor("USAGE_FORECAST_P10"),
            descriptor("USAGE_FORECAST_P90"),
        ],
        "resources": [{
            "resourceName": forecast.site,
            "intervalPeriod": {
                "start": utc(&forecast.origin),
                "duration": duration,
            },
            "intervals": intervals,
        }],
    })
}

/// OpenADR times carry an offset; a wall-clock series' times are written as UTC.
fn utc(text: &str) -> String {
    if text.ends_with('Z') || text.contains('+') {
        text.to_owned()
    } else {
        format!("{text}Z")
    }
}

/// `step_ns` as an ISO 8601 duration (`PT15M`, `PT1H`).
pub fn iso_duration(step_ns: i64) -> String {
    let seconds = step_ns / 1_000_000_000;
    match seconds {
        s if s % 3_600 == 0 => format!("PT{}H", s / 3_600),
        s if s % 60 == 0 => format!("PT{}M", s / 60),
        s => format!("PT{s}S"),
    }
}
