#!/usr/bin/env python3
"""Checks Footprint's Grafana dashboards as Grafana would take them.

    check_dashboards.py --metrics EXPOSITION_FILE

- each dashboards/*.json is what dashboards/generate.py writes (no hand edits drift from it);
- Grafana's own SDK (grafana-foundation-sdk) loads it as a dashboard, with its panels and targets;
- every panel names a unit and the provisioned Prometheus datasource;
- the provisioning files load the dashboards from a folder and define that datasource;
- every metric a panel or variable queries is a family of the exposition given (the demo
  aggregator's /metrics).

Exit 1 with every problem listed.
"""

import argparse
import importlib.util
import json
import pathlib
import re
import sys

import yaml
from grafana_foundation_sdk.models.dashboard import Dashboard

ROOT = pathlib.Path(__file__).resolve().parent.parent
BOARDS = ROOT / "dashboards"
# PromQL words that are not metric names.
PROMQL = {
    "sum", "by", "rate", "increase", "histogram_quantile", "le", "or", "vector", "label_values",
    "avg", "max", "min", "without", "on", "ignoring",
}


def exposition_families(text):
    """Sample names and family names (HELP lines) of a Prometheus text exposition."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            names.add(line.split()[2])
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def metrics_of(expr):
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    without_labels = re.sub(r"\{[^}]*\}", "", without_strings)
    without_ranges = re.sub(r"\[[^\]]*\]", "", without_labels)
    words = re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", without_ranges)
    return {w for w in words if w not in PROMQL and w.startswith("footprint_")}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--metrics", required=True, type=pathlib.Path)
    args = parser.parse_args()
    known = exposition_families(args.metrics.read_text())
    problems = []

    spec = importlib.util.spec_from_file_location("generate", BOARDS / "generate.py")
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)

    datasources = yaml.safe_load((BOARDS / "provisioning/datasources/footprint.yaml").read_text())
    uids = {d["uid"]: d["type"] for d in datasources["datasources"]}
    providers = yaml.safe_load((BOARDS / "provisioning/dashboards/footprint.yaml").read_text())
    for provider in providers["providers"]:
        if provider.get("type") != "file" or not provider.get("options", {}).get("path"):
            problems.append(f"dashboard provider {provider.get('name')}: not a file provider with a path")

    files = sorted(BOARDS.glob("*.json"))
    if sorted(f.name for f in files) != sorted(generate.DASHBOARDS):
        problems.append(f"dashboards/*.json {[f.name for f in files]} are not generate.py's {sorted(generate.DASHBOARDS)}")
    for path in files:
        text = path.read_text()
        expected = json.dumps(generate.DASHBOARDS.get(path.name), indent=2, ensure_ascii=False) + "\n"
        if text != expected:
            problems.append(f"{path.name}: differs from what generate.py writes (run dashboards/generate.py)")
        board = json.loads(text)
        loaded = Dashboard.from_json(board)
        if loaded.title != board["title"] or len(loaded.panels or []) != len(board["panels"]):
            problems.append(f"{path.name}: the Grafana SDK does not read back its title and panels")
        for panel, raw in zip(loaded.panels or [], board["panels"]):
            where = f"{path.name}: panel {panel.title!r}"
            defaults = panel.field_config.defaults if panel.field_config else None
            if defaults is None or not defaults.unit:
                problems.append(f"{where}: no unit")
            if panel.datasource is None or panel.datasource.uid not in uids:
                problems.append(f"{where}: datasource is not a provisioned one ({sorted(uids)})")
            if not panel.targets:
                problems.append(f"{where}: no query")
            for target in raw["targets"]:
                for metric in metrics_of(target["expr"]):
                    if metric not in known:
                        problems.append(f"{where}: {metric} is not in /metrics")
        for variable in board["templating"]["list"]:
            for metric in metrics_of(variable["definition"]):
                if metric not in known:
                    problems.append(f"{path.name}: variable {variable['name']}: {metric} is not in /metrics")

    for problem in problems:
        print(problem)
    print(f"{len(files)} dashboards, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
