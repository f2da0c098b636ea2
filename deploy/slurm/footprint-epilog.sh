#!/bin/sh
# Slurm Epilog (slurm.conf: Epilog=/path/footprint-epilog.sh): marks the job's file ended, so the
# collector ends its holding at this instant. Always exits 0 (a failing epilog drains the node).
dir="${FOOTPRINT_SLURM_DIR:-/run/footprint/slurm}"
[ -n "$SLURM_JOB_ID" ] || exit 0
[ -f "$dir/$SLURM_JOB_ID.job" ] || exit 0
echo "end_s=$(/bin/date +%s)" >> "$dir/$SLURM_JOB_ID.job" 2>/dev/null
exit 0
