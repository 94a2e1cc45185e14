#!/bin/bash
# Segment every slide of a folder with a Slurm job array: 20 tasks, each takes its share of the sorted list.
# promptseg reads SLURM_ARRAY_TASK_ID / SLURM_ARRAY_TASK_COUNT itself and uses SLURM_CPUS_PER_TASK threads.
# Outputs that are already complete (same model and parameters) are skipped, so a rerun only does what is missing.
#SBATCH --job-name=promptseg
#SBATCH --array=0-19
#SBATCH --cpus-per-task=4
#SBATCH --mem=8G
#SBATCH --time=04:00:00
#SBATCH --output=logs/promptseg_%A_%a.log

set -euo pipefail
promptseg segment /data/slides --pattern '*.svs' --prompt nuclei --output-dir /data/results \
    --geojson '/data/results/{stem}.geojson.gz' --table parquet
