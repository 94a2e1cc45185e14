#!/bin/bash
# The same with PBS Pro / Torque. PBS gives the array index but not the array size, so pass --shard-count
# with the same number as the -J range has tasks.
#PBS -N promptseg
#PBS -J 0-19
#PBS -l select=1:ncpus=4:mem=8gb
#PBS -l walltime=04:00:00

set -euo pipefail
cd "$PBS_O_WORKDIR"
promptseg segment /data/slides --pattern '*.svs' --prompt nuclei --output-dir /data/results --shard-count 20
