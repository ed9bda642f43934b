#!/usr/bin/env bash
# The generator pilot of weights/README.md: candidate recipes trained for the same CPU time on
# the same tight-crop data, then FID (N generated vs N training crops) of each.
#   bash benchmarks/generator_pilot.sh DATA.h5 RUNS_DIR [CPU_MINUTES] [FID_N]
# Candidates run side by side, one thread each, at low priority; their budgets are CPU time
# (not wall time), so other work on the machine does not tilt the comparison.
set -euo pipefail
data=$1 runs=$2 minutes=${3:-20} n=${4:-1000}
mkdir -p "$runs"
declare -A candidates=(
  [a-cpu64]="--preset cpu64 --discriminator stylegan2"
  [b-cpu64w]="--preset cpu64w --discriminator stylegan2"
  [c-cpu64-projected]="--preset cpu64 --discriminator projected"
  [d-cpu64w-projected]="--preset cpu64w --discriminator projected"
)
for name in "${!candidates[@]}"; do
  # shellcheck disable=SC2086
  OMP_NUM_THREADS=1 nice -n 10 faceanon train generator --data "$data" --out "$runs/$name" \
    ${candidates[$name]} --batch 16 --device cpu --kimg 100000 --sample-every 5 \
    --max-cpu-minutes "$minutes" --json > "$runs/$name.train.json" 2> "$runs/$name.train.err" &
done
wait
for name in $(printf '%s\n' "${!candidates[@]}" | sort); do
  OMP_NUM_THREADS=2 python benchmarks/generator_fid.py --run "$runs/$name" --data "$data" \
    --n "$n" --ref-cache "$runs/fid_ref_64px_$n.npz" | tee "$runs/$name.fid.json"
done
