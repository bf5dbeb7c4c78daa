#!/usr/bin/env bash
# Trains and tests the paper's three models (resnet, image, class) on one config,
# one after the other, each in its own workdir under ROOT, with the same overrides.
#
#   launch/run_variants.sh configs/synthetic.py workdirs/synthetic [--config.a.b=v ...]
#
# Each workdir ends with eval/metrics.json (per-class and mean test AUC). Rerunning
# resumes whatever was interrupted. Set PYTHON to pick the interpreter.
set -euo pipefail

if [[ $# -lt 2 ]]; then
  echo "usage: $0 CONFIG_FILE WORKDIR_ROOT [--config.a.b=v ...]" >&2
  exit 2
fi
config=$1
root=$2
shift 2
python=${PYTHON:-python}

if [[ ! -f "$config" ]]; then
  echo "$0: config file '$config' not found" >&2
  exit 2
fi

for variant in resnet image class; do
  echo "=== $variant -> $root/$variant"
  "$python" -m chestattn_jax.main --config="$config:$variant" --workdir="$root/$variant" "$@"
done

"$python" - "$root" <<'PY'
import json, os, sys
root = sys.argv[1]
rows = {}
for v in ("resnet", "image", "class"):
    with open(os.path.join(root, v, "eval", "metrics.json")) as f:
        rows[v] = json.load(f)
classes = list(rows["class"]["auc"])
print("| class | " + " | ".join(rows) + " |")
print("|---|" + "---|" * len(rows))
for c in classes:
    cells = [rows[v]["auc"][c] for v in rows]
    print(f"| {c} | " + " | ".join("n/a" if x is None else f"{x:.3f}" for x in cells) + " |")
print("| **mean** | " + " | ".join(f"{rows[v]['mean_auc']:.3f}" for v in rows) + " |")
PY
