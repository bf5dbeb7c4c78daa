#!/usr/bin/env bash
# Every GPU measurement of BENCHMARKS.md in one call, for a machine lent for minutes.
#
#   [STAGES=name,...] benchmarks/gpu_run.sh OUT_DIR [SECONDS]
#
# Run from the repository root on a machine with a GPU, jax (CUDA), flax, optax, orbax and
# torch installed. Wheels for what such a machine may lack (grain, TFDS, ml_collections, ...)
# are installed from .whl/ when that folder exists (../shared/device/wheelhouse.sh .whl).
# Stages run in order of importance, each under its own time limit, and a stage that
# would not fit in what is left of SECONDS (default 570) is skipped, so that one slow
# stage cannot take the others' results with it:
#
#   1. headline: class model, 224 px, batch 256, bfloat16; JAX against PyTorch eager
#      (AMP, channels_last, fused Adam), train and inference;
#   2. e2e: phantoms exported as NIH files, prepared at 224 px, trained 300 steps
#      through grain's worker processes and the real train loop (images/s and input wait);
#   3. compiled: the headline again with torch.compile beside eager, steps alternating;
#   4. profile: a profile of the JAX class step (kernel time by kind, HLO layout counts);
#   5. variants: the resnet and image variants, bfloat16, train;
#   6. float32: the class model in float32, train;
#   7. batches: the class model at batch 128 and 512, JAX alone, train;
#   8. resnet_compiled: the plain ResNet-50 (resnet variant), bfloat16, train, against
#      PyTorch eager and torch.compile (about a minute of compiling for torch alone).
#
# STAGES (a comma list of the names above; default all) runs only those, in the order
# above, e.g. STAGES=variants,float32,batches for a call that adds what another missed.
#
# SMOKE=1 runs every stage on a CPU in a few minutes (the tests' one-block model, 32-64 px,
# tiny batches), to try the script before a lease.
#
# Writes (those of) OUT_DIR/{env.txt, bench.md, profile.md, e2e.log, log.txt, perfetto_trace.json.gz,
# step.hlo.txt.gz} and prints the tables last.
set -uo pipefail
out=${1:?usage: benchmarks/gpu_run.sh OUT_DIR [SECONDS]}
budget=${2:-570}
start=$(date +%s)
mkdir -p "$out"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false TF_CPP_MIN_LOG_LEVEL=2
if [ -d .whl ] && [ "${SMOKE:-0}" != 1 ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
fi
export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
py=${PYTHON:-python3}
log=$out/log.txt
all_stages=headline,e2e,compiled,profile,variants,float32,batches,resnet_compiled
stages=${STAGES:-$all_stages}
for s in ${stages//,/ }; do
  case ",$all_stages," in
  *",$s,"*) ;;
  *) echo "STAGES: unknown stage '$s' (known: $all_stages)" >&2 && exit 2 ;;
  esac
done

elapsed() { echo $(($(date +%s) - start)); }
# stage NAME LIMIT_SECONDS COMMAND...: runs COMMAND if LIMIT fits in what is left.
# Stages not named in STAGES are left out silently.
stage() {
  local name=$1 limit=$2
  shift 2
  [[ ",$stages," == *",$name,"* ]] || return 0
  local left=$((budget - $(elapsed)))
  if ((left < limit / 2)); then
    echo "== $name: skipped ($left s left, needs up to $limit)" | tee -a "$log"
    return
  fi
  ((limit > left)) && limit=$left
  echo "== $name (at $(elapsed) s, limit $limit s): $*" | tee -a "$log"
  timeout --signal=INT --kill-after=15 "$limit" "$@" >>"$log" 2>&1
  echo "== $name: exit $? at $(elapsed) s" | tee -a "$log"
}

{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  nproc
  $py -c 'import sys, jax, flax, optax, orbax.checkpoint as o, torch, grain
print(sys.version.split()[0], "jax", jax.__version__, "flax", flax.__version__, "optax",
      optax.__version__, "orbax", o.__version__, "torch", torch.__version__, "grain",
      grain.__version__ if hasattr(grain, "__version__") else "?", jax.devices())'
} >"$out/env.txt" 2>&1
cat "$out/env.txt"
echo "== stages: $stages; budget $budget s" | tee -a "$log"

px=224 b=256 b2=128,512 n=2048 steps=300 workers=12 tiny=() model=""
if [ "${SMOKE:-0}" = 1 ]; then
  px=32 b=8 b2=4,16 n=300 steps=6 workers=2 tiny=(--tiny)
  model="--config.model.stage_sizes='(1,1,1,1)' --config.model.num_filters=8"
fi
bench=(benchmarks/train_step.py --sizes=$px --output="$out/bench.md" "${tiny[@]}")
stage headline 150 $py "${bench[@]}" --batch_sizes=$b --dtypes=bfloat16 --variants=class \
  --steps=20 --warmup=3

e2e=/tmp/e2e
stage e2e 170 bash -c "
  set -e
  $py -m chestattn_jax.data.export --out_dir=$e2e/raw --overwrite --num_images=$n --image_size=256
  $py -m chestattn_jax.data.prepare --dataset=nih --raw_dir=$e2e/raw --data_dir=$e2e/prep \
    --image_size=$px --num_workers=14
  $py -m chestattn_jax.main --config=configs/nih.py:class --workdir=$e2e/wd --mode=train \
    --config.data.data_dir=$e2e/prep --config.model.dtype=bfloat16 \
    --config.train.batch_size=$b --config.train.num_steps=$steps \
    --config.train.log_every_steps=25 --config.train.eval_every_steps=$steps \
    --config.data.num_workers=$workers --config.data.image_size=$px $model 2>&1 | tee $out/e2e.log"

stage compiled 220 $py "${bench[@]}" --batch_sizes=$b --dtypes=bfloat16 --variants=class \
  --torch_modes=eager,compile --steps=20 --warmup=3

stage profile 90 $py benchmarks/profile_step.py --variant=class --size=$px --batch=$b \
  --dtype=bfloat16 "${tiny[@]}" --steps=5 --warmup=3 --out="$out"

stage variants 130 $py "${bench[@]}" --batch_sizes=$b --dtypes=bfloat16 \
  --variants=resnet,image --noinference --steps=15
stage float32 90 $py "${bench[@]}" --batch_sizes=$b --dtypes=float32 --variants=class \
  --noinference --steps=15
stage batches 90 $py benchmarks/train_step.py --sizes=$px,$px --batch_sizes=$b2 "${tiny[@]}" \
  --dtypes=bfloat16 --variants=class --notorch --noinference --steps=15 \
  --output="$out/bench.md"
stage resnet_compiled 160 $py "${bench[@]}" --batch_sizes=$b --dtypes=bfloat16 \
  --variants=resnet --torch_modes=eager,compile --noinference --steps=15

echo "== done at $(elapsed) s"
grep -h "images/s\|input wait" "$out/e2e.log" 2>/dev/null | tail -8
[ -f "$out/profile.md" ] && head -40 "$out/profile.md"
[ -f "$out/bench.md" ] && grep -v "^$" "$out/bench.md" | grep "^|\|^###\|peak"
exit 0
