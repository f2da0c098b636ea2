#!/usr/bin/env python3
"""The peer on the same backtest: statsforecast's AutoETS and MSTL with their prediction
intervals, scored on exactly the points `footprint forecast backtest --output F` scored.

    python3 scripts/forecast_peer.py --input SERIES.csv --time-column C --value-column C \
        [--only host=cbsugpu08] --points F [--history-weeks 8]

The series is read as Footprint reads it (values averaged within each hour, wall-clock or UTC
times as written, missing hours as gaps); the origins, timestamps and actuals come from F. Each
model is fitted on the `--history-weeks` before each origin only (statsforecast needs no gaps:
they are filled with the last value before them) and forecasts 48 h with `level=[80]`, whose
bounds are the P10 and P90. Prints JSON: each model's pinball loss, P50 MAPE, P10-P90 coverage,
seconds and median ms per fit + forecast, beside Footprint's on the same points.

Needs `pip install statsforecast` (see BENCHMARKS.md for the version measured).
"""

import argparse
import csv
import json
import statistics
import sys
import time
import warnings
from collections import defaultdict
from datetime import datetime, timedelta

import numpy as np

warnings.filterwarnings("ignore")


def read_series(path, time_column, value_column, only):
    sums = defaultdict(float)
    counts = defaultdict(int)
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            if only and row[only[0]].strip() != only[1]:
                continue
            text = row[value_column].strip()
            if not text:
                continue
            at = datetime.fromisoformat(row[time_column].strip().replace("Z", "+00:00"))
            at = at.replace(tzinfo=None) if at.utcoffset() is None else at
            at = at.replace(minute=0, second=0, microsecond=0)
            sums[at] += float(text)
            counts[at] += 1
    return {at: sums[at] / counts[at] for at in sums}


def pinball(actual, p10, p50, p90):
    total = 0.0
    for q, predicted in ((0.1, p10), (0.5, p50), (0.9, p90)):
        miss = actual - predicted
        total += max(q * miss, (q - 1) * miss)
    return total / 3


def score(rows):
    losses = [pinball(a, p10, p50, p90) for a, p10, p50, p90 in rows]
    apes = [abs(a - p50) / abs(a) for a, _, p50, _ in rows if a != 0]
    covered = [p10 <= a <= p90 for a, p10, _, p90 in rows]
    return {
        "pinball_loss": sum(losses) / len(losses),
        "mape_p50": sum(apes) / len(apes),
        "coverage_p10_p90": sum(covered) / len(covered),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--input", required=True)
    parser.add_argument("--time-column", required=True)
    parser.add_argument("--value-column", required=True)
    parser.add_argument("--only")
    parser.add_argument("--points", required=True)
    parser.add_argument("--history-weeks", type=int, default=8)
    args = parser.parse_args()
    from statsforecast.models import MSTL, AutoETS

    only = tuple(args.only.split("=", 1)) if args.only else None
    series = read_series(args.input, args.time_column, args.value_column, only)
    points = defaultdict(list)
    with open(args.points, newline="") as handle:
        for row in csv.DictReader(handle):
            points[row["origin"]].append(row)
    models = {
        "autoets": lambda: AutoETS(season_length=24),
        "mstl": lambda: MSTL(season_length=[24, 168], trend_forecaster=AutoETS(model="ZZN")),
    }
    scored = {name: [] for name in models}
    ours = []
    timings = {name: [] for name in models}
    for done, (origin_text, rows) in enumerate(sorted(points.items())):
        origin = datetime.fromisoformat(origin_text.replace("Z", "+00:00"))
        hours = args.history_weeks * 7 * 24
        history, last = [], None
        for k in range(hours, 0, -1):
            value = series.get(origin - timedelta(hours=k))
            last = value if value is not None else last
            history.append(last)
        first = next((v for v in history if v is not None), None)
        history = np.array([first if v is None else v for v in history], dtype=float)
        for name, make in models.items():
            started = time.perf_counter()
            forecast = make().forecast(y=history, h=48, level=[80])
            timings[name].append(time.perf_counter() - started)
            for row in rows:
                at = datetime.fromisoformat(row["timestamp"].replace("Z", "+00:00"))
                step = int((at - origin).total_seconds() // 3600)
                scored[name].append((
                    float(row["actual"]),
                    float(forecast["lo-80"][step]),
                    float(forecast["mean"][step]),
                    float(forecast["hi-80"][step]),
                ))
        for row in rows:
            ours.append(tuple(float(row[k]) for k in ("actual", "p10", "p50", "p90")))
        print(f"peer: origin {done + 1}/{len(points)}", file=sys.stderr)
    answer = {"footprint": score(ours), "points_scored": len(ours), "history_weeks": args.history_weeks}
    for name in models:
        answer[name] = score(scored[name])
        answer[name]["seconds"] = sum(timings[name])
        answer[name]["median_ms_per_forecast"] = statistics.median(timings[name]) * 1e3
        answer[name]["footprint_pinball_ratio"] = (
            answer["footprint"]["pinball_loss"] / answer[name]["pinball_loss"]
        )
    print(json.dumps(answer, indent=2))


if __name__ == "__main__":
    main()
