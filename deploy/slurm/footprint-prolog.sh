#!/bin/sh
# Slurm Prolog (slurm.conf: Prolog=/path/footprint-prolog.sh, PrologFlags=Alloc): tells this
# node's Footprint collector that a job starts here and which GPUs it holds, by leaving one file
# per job in $FOOTPRINT_SLURM_DIR (default /run/footprint/slurm) for the collector's `slurm`
# source. Slurm runs hooks as SlurmdUser with no PATH, hence the absolute paths. A failing
# prolog would drain the node, so this one always exits 0.
dir="${FOOTPRINT_SLURM_DIR:-/run/footprint/slurm}"
[ -n "$SLURM_JOB_ID" ] || exit 0
/bin/mkdir -p "$dir" 2>/dev/null || exit 0
tmp="$dir/.$SLURM_JOB_ID.job.tmp"
{
  echo "job_id=$SLURM_JOB_ID"
  echo "user=$SLURM_JOB_USER"
  echo "uid=$SLURM_JOB_UID"
  echo "account=$SLURM_JOB_ACCOUNT"
  echo "partition=$SLURM_JOB_PARTITION"
  # GRES GPU indices on this node (SLURM_JOB_GPUS); CUDA_VISIBLE_DEVICES on older releases.
  echo "gpus=${SLURM_JOB_GPUS:-$CUDA_VISIBLE_DEVICES}"
  echo "start_s=$(/bin/date +%s)"
} > "$tmp" 2>/dev/null && /bin/mv -f "$tmp" "$dir/$SLURM_JOB_ID.job" 2>/dev/null
exit 0
