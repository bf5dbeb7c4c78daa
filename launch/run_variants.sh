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
fmt = lambda x: "n/a" if x is None else f"{x:.3f}"
pg = {v: r["pointing_game"]["hit_rate"] for v, r in rows.items() if "pointing_game" in r}
print("| class | " + " | ".join(f"AUC {v}" for v in rows)
      + "".join(f" | hit rate {v}" for v in pg) + " |")
print("|---|" + "---|" * (len(rows) + len(pg)))
for c in rows["class"]["auc"]:
    print(f"| {c} | " + " | ".join(fmt(rows[v]["auc"][c]) for v in rows)
          + "".join(f" | {fmt(pg[v][c])}" for v in pg) + " |")
print("| **mean** | " + " | ".join(fmt(rows[v]["mean_auc"]) for v in rows)
      + "".join(f" | {fmt(rows[v]['pointing_game']['mean_hit_rate'])}" for v in pg) + " |")
PY
