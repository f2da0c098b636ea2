#!/usr/bin/env python3
"""Writes Footprint's Grafana dashboards (dashboards/*.json) from the panel lists below.

Run it after changing a panel; `cli/tests/dashboards.rs` checks that the committed JSON is what
this writes, that Grafana's own SDK loads every dashboard, that every panel has a unit, and that
every metric a panel queries exists in the demo aggregator's /metrics.
"""

import json
import pathlib

HERE = pathlib.Path(__file__).resolve().parent
PROMETHEUS = {"type": "prometheus", "uid": "footprint-prometheus"}


def panel(title, exprs, unit, kind="timeseries", description="", legend="", stack=False, decimals=None):
    """One panel of PromQL `exprs` ([(expr, legend)] or a single expr) in `unit`."""
    if isinstance(exprs, str):
        exprs = [(exprs, legend)]
    defaults = {"unit": unit}
    if decimals is not None:
        defaults["decimals"] = decimals
    if kind == "timeseries":
        defaults["custom"] = {"fillOpacity": 20 if stack else 0, "stacking": {"mode": "normal" if stack else "none"}}
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": PROMETHEUS,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {"legend": {"showLegend": True, "displayMode": "list", "placement": "bottom"}} if kind == "timeseries" else {"reduceOptions": {"calcs": ["lastNotNull"]}},
        "targets": [
            {"refId": chr(ord("A") + i), "datasource": PROMETHEUS, "expr": expr, "legendFormat": legend_format}
            for i, (expr, legend_format) in enumerate(exprs)
        ],
    }


def variable(name, query, label, multi=True):
    return {
        "type": "query",
        "name": name,
        "label": label,
        "datasource": PROMETHEUS,
        "query": {"query": query, "refId": name},
        "definition": query,
        "refresh": 2,
        "multi": multi,
        "includeAll": multi,
        "current": {},
        "sort": 1,
    }


def dashboard(uid, title, description, panels, variables=(), time_from="now-24h"):
    width = {"stat": 4, "timeseries": 12}
    laid = []
    x = y = 0
    for index, p in enumerate(panels):
        w = width.get(p["type"], 12)
        h = 4 if p["type"] == "stat" else 8
        if x + w > 24:
            x, y = 0, y + h
        laid.append({**p, "id": index + 1, "gridPos": {"x": x, "y": y, "w": w, "h": h}})
        x += w
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["footprint"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "time": {"from": time_from, "to": "now"},
        "refresh": "1m",
        "templating": {"list": list(variables)},
        "annotations": {"list": []},
        "links": [{"type": "dashboards", "tags": ["footprint"], "asDropdown": True, "title": "Footprint"}],
        "panels": laid,
    }


DASHBOARDS = {
    "facility.json": dashboard(
        "footprint-facility",
        "Footprint — facility",
        "The site as the ledger settles it: power, PUE, WUE, water, carbon and the grid's intensity.",
        [
            panel("Facility power (newest settled hour)", 'footprint_facility_power_watts{period="hour"}', "watt", "stat"),
            panel("PUE (newest settled hour)", 'footprint_pue_ratio{period="hour"}', "none", "stat", decimals=3),
            panel("WUE (newest settled hour)", 'footprint_wue_litres_per_kilowatt_hour{period="hour"}', "litre/kWh", "stat", decimals=2),
            panel("Grid intensity", "footprint_grid_carbon_intensity_grams_per_kilowatt_hour", "g/kWh", "stat", legend="{{zone}}"),
            panel("Collectors connected", "footprint_collectors_connected", "none", "stat"),
            panel("Jobs exposed", "footprint_job_series", "none", "stat"),
            panel(
                "Power: facility and IT",
                [
                    ('footprint_facility_power_watts{period="window"}', "facility (newest settled window)"),
                    ("sum(footprint_host_power_watts)", "IT (newest built windows)"),
                ],
                "watt",
            ),
            panel("PUE and WUE", [('footprint_pue_ratio{period="hour"}', "PUE"), ('footprint_wue_litres_per_kilowatt_hour{period="hour"}', "WUE L/kWh")], "none", decimals=3),
            panel("Energy settled per hour", [("increase(footprint_facility_energy_joules_total[1h])", "facility"), ("increase(footprint_it_energy_joules_total[1h])", "IT")], "joule"),
            panel("Carbon settled per hour", "increase(footprint_carbon_grams_total[1h])", "massg", legend="{{method}}-based"),
            panel("Water settled per hour", "increase(footprint_water_litres_total[1h])", "litre"),
            panel("Grid carbon intensity", "footprint_grid_carbon_intensity_grams_per_kilowatt_hour", "g/kWh", legend="{{zone}}"),
            panel(
                "Load forecast: facility power ahead (P10, P50, P90)",
                "footprint_forecast_facility_power_watts",
                "watt",
                "bargauge",
                description="The analog-quantile forecast from the newest data: the draw 1, 6, 24 and 48 hours ahead, by quantile. Absent until about four days of history.",
                legend="{{horizon}} P{{quantile}}",
            ),
            panel(
                "Load forecast: the P10–P90 band and P50 as forecast at each moment, 24 h ahead",
                [
                    ('footprint_forecast_facility_power_watts{horizon="24h", quantile="0.1"}', "P10"),
                    ('footprint_forecast_facility_power_watts{horizon="24h", quantile="0.5"}', "P50"),
                    ('footprint_forecast_facility_power_watts{horizon="24h", quantile="0.9"}', "P90"),
                ],
                "watt",
            ),
        ],
    ),
    "hosts.json": dashboard(
        "footprint-hosts",
        "Footprint — halls, racks and hosts",
        "IT power and energy by hall, rack and host (hosts carry their hall and rack from the aggregator's placement).",
        [
            panel("IT power by hall", 'sum by (hall) (footprint_host_power_watts{hall=~"$hall"})', "watt", legend="{{hall}}", stack=True),
            panel("IT power by rack", 'sum by (rack) (footprint_host_power_watts{hall=~"$hall", rack=~"$rack"})', "watt", legend="{{rack}}", stack=True),
            panel("IT power by host", 'footprint_host_power_watts{hall=~"$hall", rack=~"$rack", host=~"$host"}', "watt", legend="{{host}}"),
            panel("IT energy settled per hour by host", 'increase(footprint_host_energy_joules_total{hall=~"$hall", rack=~"$rack", host=~"$host"}[1h])', "joule", legend="{{host}}", stack=True),
        ],
        variables=[
            variable("hall", "label_values(footprint_host_power_watts, hall)", "Hall"),
            variable("rack", 'label_values(footprint_host_power_watts{hall=~"$hall"}, rack)', "Rack"),
            variable("host", 'label_values(footprint_host_power_watts{hall=~"$hall", rack=~"$rack"}, host)', "Host"),
        ],
    ),
    "job.json": dashboard(
        "footprint-job",
        "Footprint — one job",
        "One job's footprint over time: energy with its share of overhead, IT energy, water and carbon (recent jobs only: metrics.job_series_retention_s).",
        [
            panel("Energy", 'footprint_job_energy_joules_total{job="$job"}', "joule", "stat"),
            panel("IT energy", 'footprint_job_it_energy_joules_total{job="$job"}', "joule", "stat"),
            panel("Water", 'footprint_job_water_litres_total{job="$job"}', "litre", "stat"),
            panel("CO2e, location-based", 'footprint_job_carbon_grams_total{job="$job", method="location"}', "massg", "stat"),
            panel("CO2e, market-based", 'footprint_job_carbon_grams_total{job="$job", method="market"}', "massg", "stat"),
            panel("CO2e, embodied", 'footprint_job_carbon_grams_total{job="$job", method="embodied"}', "massg", "stat"),
            panel("Power (energy per second)", [('rate(footprint_job_energy_joules_total{job="$job"}[5m])', "with overhead"), ('rate(footprint_job_it_energy_joules_total{job="$job"}[5m])', "IT")], "watt"),
            panel("Energy so far", [('footprint_job_energy_joules_total{job="$job"}', "with overhead"), ('footprint_job_it_energy_joules_total{job="$job"}', "IT")], "joule"),
            panel("CO2e so far", 'footprint_job_carbon_grams_total{job="$job"}', "massg", legend="{{method}}"),
            panel("Water so far", 'footprint_job_water_litres_total{job="$job"}', "litre"),
        ],
        variables=[
            variable("project", "label_values(footprint_job_energy_joules_total, project)", "Project"),
            variable("job", 'label_values(footprint_job_energy_joules_total{project=~"$project"}, job)', "Job", multi=False),
        ],
    ),
    "pipeline.json": dashboard(
        "footprint-pipeline",
        "Footprint — pipeline health",
        "Is every reading arriving, stored and settled: collectors, ages, backlogs, ack latency, refusals.",
        [
            panel("Collectors connected", "footprint_collectors_connected", "none", "stat"),
            panel("Hours waiting to settle", "footprint_hour_settlements_pending", "none", "stat"),
            panel("Job series dropped by the cap", "footprint_job_series_dropped", "none", "stat"),
            panel("Ack latency p99", "histogram_quantile(0.99, sum by (le) (rate(footprint_aggregator_ack_latency_seconds_bucket[5m])))", "s", "stat"),
            panel("Readings stored per second", "rate(footprint_aggregator_readings_stored_total[5m])", "reqps", "stat"),
            panel("Batches per second", "sum(rate(footprint_aggregator_batches_total[5m]))", "reqps", "stat"),
            panel("Seconds since each collector's last batch", "footprint_collector_last_batch_age_seconds", "s", legend="{{collector}}"),
            panel("Seconds since each collector's newest reading", "footprint_collector_last_reading_age_seconds", "s", legend="{{collector}}"),
            panel("Windows waiting to be built", "footprint_collector_windows_pending", "none", legend="{{collector}}"),
            panel("Ack latency", [("histogram_quantile(0.5, sum by (le) (rate(footprint_aggregator_ack_latency_seconds_bucket[5m])))", "p50"), ("histogram_quantile(0.99, sum by (le) (rate(footprint_aggregator_ack_latency_seconds_bucket[5m])))", "p99")], "s"),
            panel("Readings rejected by reason", "sum by (reason) (rate(footprint_aggregator_readings_rejected_total[5m]))", "reqps", legend="{{reason}}"),
            panel("Streams refused by reason", "sum by (reason) (rate(footprint_aggregator_streams_refused_total[5m]))", "reqps", legend="{{reason}}"),
            panel("Late data", "sum by (reason) (rate(footprint_aggregator_late_data_total[5m]))", "reqps", legend="{{reason}}"),
            panel("Windows built and hours settled", [("rate(footprint_aggregator_windows_built_total[5m])", "windows built"), ("rate(footprint_aggregator_hour_settlements_total[5m])", "hours settled")], "reqps"),
        ],
    ),
}


def main():
    for name, board in DASHBOARDS.items():
        (HERE / name).write_text(json.dumps(board, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
