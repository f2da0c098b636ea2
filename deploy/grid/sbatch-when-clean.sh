#!/bin/bash
# A Slurm batch script that starts its work only when the grid allows: `footprint grid wait`
# blocks until the aggregator's signal is `normal` (or the intensity is below a figure), and
# gives up after the deadline with exit code 2, so the job can decide what to do then.
#
#   sbatch deploy/grid/sbatch-when-clean.sh
#
#SBATCH --job-name=train-when-clean
#SBATCH --gres=gpu:8
#SBATCH --time=12:00:00

set -euo pipefail
AGGREGATOR=${FOOTPRINT_URL:-http://aggregator.internal:7412}

# Wait for the level to be normal, at most six hours; then run anyway (drop `|| true` to give up).
footprint grid wait --url "$AGGREGATOR" --level normal --deadline 6h --every-s 300 || {
    code=$?
    [ "$code" -eq 2 ] || exit "$code"   # 1: a usage error; 2: the deadline passed
    echo "grid still not normal after 6 h: starting anyway" >&2
}
# Or: a threshold of your own, in g CO2e/kWh of the site's zone.
#   footprint grid wait --url "$AGGREGATOR" --below 250 --deadline 2026-12-04T06:00:00Z

srun python train.py
