#!/usr/bin/env bash
# One chunk of the CPU generator campaign (weights/README.md): resume the run, train for a
# while at low priority, measure FID (2,000 generated vs 2,000 training crops) and copy what is
# committed into weights/campaign/NAME: the compact checkpoint, the log, the latest sample grid
# and the FID curve.
#   bash benchmarks/generator_chunk.sh DATA.h5 RUN_DIR NAME MINUTES [TRAIN OPTIONS...]
# A fresh machine has no RUN_DIR: the chunk starts from the committed compact checkpoint.
# SIGTERM to the trainer ends a chunk early and cleanly (checkpoint, samples, export).
set -euo pipefail
data=$1 run=$2 name=$3 minutes=$4
shift 4
keep="weights/campaign/$name"
mkdir -p "$run" "$keep"
if [[ ! -e "$run/checkpoint.pt" && -e "$keep/checkpoint-compact.pt" ]]; then
  cp "$keep/checkpoint-compact.pt" "$run/checkpoint-compact.pt"
  cp "$keep/log.jsonl" "$run/log.jsonl"
fi
resume=()
[[ -e "$run/checkpoint.pt" || -e "$run/checkpoint-compact.pt" ]] && resume=(--resume)
nice -n 10 faceanon train generator --data "$data" --out "$run" "${resume[@]}" --batch 16 \
  --device "${DEVICE:-cpu}" --kimg 100000 --sample-every 10 --max-minutes "$minutes" --json "$@" \
  | tail -1 > "$run/chunk.json"
nice -n 10 python benchmarks/generator_fid.py --run "$run" --data "$data" --n 2000 \
  --ref-cache "$run/fid_ref_2000.npz" > "$run/fid.json"
python - "$run" "$keep" <<'PY'
import json, shutil, sys
from pathlib import Path
run, keep = Path(sys.argv[1]), Path(sys.argv[2])
chunk, fid = json.loads((run / "chunk.json").read_text()), json.loads((run / "fid.json").read_text())
line = {"kimg": chunk["kimg"], "cpu_min": chunk["cpu_min"], "fid_2000": fid["fid"],
        "chunk_wall_s": chunk["wall_s"]}
with open(keep / "fid.jsonl", "a") as f:
    f.write(json.dumps(line) + "\n")
for name in ("checkpoint-compact.pt", "log.jsonl", "generator.json"):
    shutil.copyfile(run / name, keep / name)
shutil.copyfile(max((run / "samples").glob("grid-*.png")), keep / "samples-latest.png")
print(json.dumps(line))
PY
