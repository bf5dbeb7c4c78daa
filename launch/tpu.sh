#!/usr/bin/env bash
# Trains on a Cloud TPU VM (one host or a pod slice) from this machine, through gcloud.
# Run `launch/tpu.sh --help` for the commands and options; docs/tpu.md walks through a run.
#
# The gcloud commands and flags follow the Cloud TPU and gcloud reference pages:
#   gcloud compute tpus tpu-vm create|ssh|scp|describe|delete
#     https://cloud.google.com/sdk/gcloud/reference/compute/tpus/tpu-vm/create (--accelerator-type,
#     --version, --spot), .../tpu-vm/ssh (--worker=all, --command, --internal-ip), .../tpu-vm/scp
#   gcloud compute tpus queued-resources create|describe|delete
#     https://cloud.google.com/sdk/gcloud/reference/compute/tpus/queued-resources/create
#     (--node-id, --runtime-version, --spot, --valid-until-duration), .../delete (--force)
#   Runtime (software) versions for JAX: https://cloud.google.com/tpu/docs/runtimes
#   One process per worker, all started at once with --worker=all:
#     https://cloud.google.com/tpu/docs/jax-pods
#   JAX's TPU wheels: pip install "jax[tpu]" (https://docs.jax.dev/en/latest/installation.html),
#     here through this package's `tpu` extra.
set -euo pipefail

PROG=tpu.sh
DRY_RUN=0
module=chestattn_jax.main  # --experiment: chestattn_jax.experiment
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<'EOF'
Usage: launch/tpu.sh COMMAND [options] [-- extra arguments for chestattn_jax.main]

Trains chestattn-jax on a Cloud TPU VM: one host (v5litepod-8, v4-8, ...) or a pod slice
(v4-32, v5litepod-16, ...: several workers, one training process on each, all started at once).
Data and workdir live in a GCS bucket, so that nothing is lost when the VM goes away.

Commands:
  create   create the TPU VM, or request it as a queued resource (--queued) and wait until it
           is ACTIVE. A READY TPU of that name is reused; a preempted one needs --recreate.
  setup    copy the code to every worker (this checkout, or --source=git:...), create a venv
           with --python and `pip install -e '.[tpu]'` (JAX's TPU wheels), check the devices.
  run      start `python -m chestattn_jax.main` on every worker, detached (it survives a lost
           ssh connection), logging to ~/chestattn-logs/run.log there. --wait streams worker 0's
           log until the run ends.
  logs     stream a worker's log (--worker, default 0) until the run ends; --no_follow prints
           the last --lines and returns.
  status   the TPU's state and, on every worker, whether the run is going or how it exited.
  stop     SIGTERM the run on every worker (it writes a checkpoint on that signal, as on a
           preemption notice).
  delete   delete the TPU VM (with --queued: the queued resource and its VM).
  all      create, setup, run, then stream worker 0's log until the run ends (unless --detach);
           with --delete_after the VM is deleted when the run ends, fails or is preempted.

Required:
  --tpu_name=NAME          the TPU VM (and queued resource) name
  --zone=ZONE              e.g. us-central2-b (v4), europe-west4-b (v5e): where the type is offered
  --config=FILE[:ARG]      run/all: config file in the repository, e.g. configs/chexpert.py:class
  --workdir=gs://B/DIR     run/all: checkpoints, metrics and evaluation output

Options:
  --project=ID             default: `gcloud config get-value project` (not asked under --dry-run)
  --accelerator_type=TYPE  create: default v5litepod-8 (one host); v4-32, v5litepod-16, v5p-16,
                           ... are pod slices with several workers
  --runtime_version=V      create: default from the type: v2-alpha-tpuv6e (v6e),
                           v2-alpha-tpuv5 (v5p), v2-alpha-tpuv5-lite (v5e), tpu-ubuntu2204-base (v4
                           and older)
  --spot                   create: Spot VMs (much cheaper, preemptible at any time)
  --queued                 create/delete/status: go through a queued resource
                           (`gcloud compute tpus queued-resources`), which waits for capacity
  --valid_until_duration=D create --queued: give up the request after D (e.g. 6h)
  --recreate               create: delete a TPU of that name that is not READY (preempted) first
  --create_arg=ARG         create: one more flag for gcloud's create, e.g.
                           --create_arg=--network=my-net (repeatable)
  --internal_ip            ssh/scp over the VMs' internal IPs (--internal-ip)
  --source=local|git:URL[@REF]
                           setup: copy this checkout (the files git tracks or would track:
                           committed or not, ignored ones left out; the default), or clone URL
                           on every worker and check out REF (branch, tag or commit)
  --python=PY              setup: the interpreter for the venv (default python3.11, installed
                           with apt when missing; the package needs Python 3.11 or newer)
  --skip_check             setup: skip the jax.device_count() check at the end
  --data_dir=gs://B/DIR    run/all: the prepared data (becomes --config.data.data_dir=...)
  --copy_data_to=DIR       run/all: first copy --data_dir to DIR (an absolute path) on every
                           worker (gcloud storage rsync: a rerun copies only what changed), then
                           train from there; recommended for training (docs/tpu.md)
  --env=KEY=VALUE          run/all: set in the training process's environment (repeatable)
  --config.FIELD=VALUE     run/all: passed on to chestattn_jax.main, as is everything after --
  --experiment             run/all: run python -m chestattn_jax.experiment (--workdir is the
                           experiment's root; give --cell=N after --) instead of the main module
  --no_distributed         run/all: leave out main's --distributed (which has every worker call
                           jax.distributed.initialize(), detecting the slice from the TPU VM)
  --wait                   run: stream worker 0's log until the run ends (as `all` does)
  --detach                 all: return once the run has started
  --delete_after           all: delete the VM when the run ends (also on failure or preemption;
                           not on Ctrl-C, and not when worker 0 cannot be reached)
  --worker=N               logs: which worker (default 0)
  --lines=N                logs: lines of history to print first (default 100)
  --no_follow              logs: print and return
  --poll_seconds=S         how often to poll a queued resource or a lost connection (default 30)
  --dry-run                print the commands (gcloud, tar, ...) instead of running them;
                           nothing is created and gcloud is not called
  -h, --help               this text

Examples:
  # One v5e host, spot, the whole run, VM deleted at the end:
  launch/tpu.sh all --tpu_name=cx1 --zone=europe-west4-b --accelerator_type=v5litepod-8 --spot \
      --config=configs/chexpert.py --data_dir=gs://my-bucket/prepared \
      --workdir=gs://my-bucket/runs/chexpert_class --delete_after -- \
      --config.model.dtype=bfloat16 --config.train.batch_size=256
  # A v4-32 pod slice (4 workers) through a spot queued resource, step by step:
  launch/tpu.sh create --tpu_name=pod --zone=us-central2-b --accelerator_type=v4-32 --spot --queued
  launch/tpu.sh setup  --tpu_name=pod --zone=us-central2-b
  launch/tpu.sh run    --tpu_name=pod --zone=us-central2-b --config=configs/nih.py:class \
      --data_dir=gs://my-bucket/prepared --workdir=gs://my-bucket/runs/nih_class
  launch/tpu.sh logs   --tpu_name=pod --zone=us-central2-b
  launch/tpu.sh delete --tpu_name=pod --zone=us-central2-b --queued

Exit status: 0 when the run succeeded, 1 when it failed, 2 for a usage error, 75 when the TPU
was preempted under a watched run (`all`, `run --wait`): the same command with --recreate then
resumes from the workdir's latest checkpoint on a new VM. A failing gcloud call stops the script
with that call's exit status.
EOF
}

# Where things live on each worker, relative to the ssh login's home directory.
REMOTE_DIR=chestattn-jax
REMOTE_TARBALL=chestattn-src.tar.gz

tpu_name="" zone="" project=""
accelerator_type=v5litepod-8 runtime_version=""
spot=0 queued=0 recreate=0 internal_ip=0 valid_until=""
create_args=()
source_spec=local python=python3.11 skip_check=0
config="" workdir="" data_dir="" copy_data_to=""
envs=() main_args=()
wait_run=0 detach=0 delete_after=0 distributed=1
worker=0 lines=100 follow=1 poll_seconds=30

command=${1:-}
case $command in
  "" | -h | --help | help)
    usage
    [[ -n $command ]] || exit 2
    exit 0
    ;;
  create | setup | run | logs | status | stop | delete | all) shift ;;
  *) die "unknown command '$command' (create, setup, run, logs, status, stop, delete, all; see --help)" ;;
esac

while (($# > 0)); do
  case $1 in
    --tpu_name=*) tpu_name=$(opt_value "$1") ;;
    --zone=*) zone=$(opt_value "$1") ;;
    --project=*) project=$(opt_value "$1") ;;
    --accelerator_type=*) accelerator_type=$(opt_value "$1") ;;
    --runtime_version=*) runtime_version=$(opt_value "$1") ;;
    --spot) spot=1 ;;
    --queued) queued=1 ;;
    --valid_until_duration=*) valid_until=$(opt_value "$1") ;;
    --recreate) recreate=1 ;;
    --create_arg=*) create_args+=("$(opt_value "$1")") ;;
    --internal_ip) internal_ip=1 ;;
    --source=*) source_spec=$(opt_value "$1") ;;
    --python=*) python=$(opt_value "$1") ;;
    --skip_check) skip_check=1 ;;
    --config=*) config=$(opt_value "$1") ;;
    --workdir=*) workdir=$(opt_value "$1") ;;
    --data_dir=*) data_dir=$(opt_value "$1") ;;
    --copy_data_to=*) copy_data_to=$(opt_value "$1") ;;
    --env=*)
      kv=$(opt_value "$1")
      [[ $kv =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "--env takes KEY=VALUE, got '$kv'"
      envs+=("$kv")
      ;;
    --config.*=*) main_args+=("$1") ;;
    --no_distributed) distributed=0 ;;
    --wait) wait_run=1 ;;
    --detach) detach=1 ;;
    --delete_after) delete_after=1 ;;
    --worker=*) worker=$(opt_value "$1") ;;
    --lines=*) lines=$(opt_value "$1") ;;
    --no_follow) follow=0 ;;
    --poll_seconds=*) poll_seconds=$(opt_value "$1") ;;
    --experiment) module=chestattn_jax.experiment ;;
    --dry-run | --dry_run) DRY_RUN=1 ;;
    -h | --help)
      usage
      exit 0
      ;;
    --)
      shift
      main_args+=("$@")
      break
      ;;
    --tpu_name | --zone | --project | --accelerator_type | --runtime_version | \
      --valid_until_duration | --create_arg | --source | --python | --config | --workdir | \
      --data_dir | --copy_data_to | --env | --worker | --lines | --poll_seconds)
      die "$1 needs a value: $1=..."
      ;;
    *) die "unknown option '$1' (see --help; arguments for chestattn_jax.main go after --)" ;;
  esac
  shift
done

[[ $worker =~ ^([0-9]+|all)$ ]] || die "--worker takes a number or 'all', got '$worker'"
[[ $lines =~ ^[0-9]+$ ]] || die "--lines takes a number, got '$lines'"
[[ $poll_seconds =~ ^[0-9]+$ ]] || die "--poll_seconds takes a number, got '$poll_seconds'"

default_runtime_version() {
  # https://cloud.google.com/tpu/docs/runtimes: "PyTorch and JAX" table.
  case $1 in
    v6e-*) echo v2-alpha-tpuv6e ;;
    v5p-*) echo v2-alpha-tpuv5 ;;
    v5litepod-* | v5e-*) echo v2-alpha-tpuv5-lite ;;
    v2-* | v3-* | v4-*) echo tpu-ubuntu2204-base ;;
    *) die "no default runtime version for --accelerator_type=$1: pass --runtime_version" \
      "(https://cloud.google.com/tpu/docs/runtimes)" ;;
  esac
}

# --- Checks before anything is created -------------------------------------------------------

needs_run_options() { [[ $command == run || $command == all ]]; }

need_value --tpu_name "$tpu_name"
need_value --zone "$zone"
if [[ $command == create || $command == all ]]; then
  [[ -n $runtime_version ]] || runtime_version=$(default_runtime_version "$accelerator_type")
fi
if needs_run_options; then
  need_value --config "$config"
  need_value --workdir "$workdir"
  if [[ $source_spec == local && ! -f "$(repo_root)/$(config_file "$config")" ]]; then
    die "--config=$config: no file $(config_file "$config") in $(repo_root) (give the path" \
      "inside the repository, as the workers see it)"
  fi
fi
if [[ $source_spec != local && $source_spec != git:?* ]]; then
  die "--source takes 'local' or 'git:URL[@REF]', got '$source_spec'"
fi
if [[ -n $copy_data_to ]]; then
  [[ -n $data_dir ]] || die "--copy_data_to copies --data_dir: give both"
  [[ $copy_data_to == /* ]] || die "--copy_data_to takes an absolute path, got '$copy_data_to'"
fi
if ((delete_after && detach)); then
  die "--delete_after waits for the run to end; it does not go with --detach"
fi
if ((delete_after)) && [[ $command != all ]]; then
  die "--delete_after belongs to 'all' (or delete the VM with 'launch/tpu.sh delete')"
fi

# --- gcloud ----------------------------------------------------------------------------------

loc=()
resolve_project() {
  if [[ -z $project ]]; then
    if ((DRY_RUN)); then
      note "no --project: gcloud's configured project (gcloud config get-value project) applies"
    else
      project=$(gcloud config get-value project 2>/dev/null) ||
        die --code=1 "no --project, and 'gcloud config get-value project' failed"
      if [[ -z $project || $project == "(unset)" ]]; then
        die "no --project, and gcloud has no default project" \
          "(pass --project=ID, or: gcloud config set project ID)"
      fi
      log "project $project (from gcloud config)"
    fi
  fi
  loc=(--zone="$zone")
  [[ -z $project ]] || loc+=(--project="$project")
}

ssh_flags=()
((internal_ip)) && ssh_flags+=(--internal-ip)

# tpu_ssh WORKER COMMAND: run a shell command line on one worker or on all of them at once.
tpu_ssh() {
  run gcloud compute tpus tpu-vm ssh "$tpu_name" "${loc[@]}" --worker="$1" "${ssh_flags[@]}" \
    --command="$2"
}

# capture VAR CMD...: run CMD for its output (not under --dry-run); a failure stops the script.
capture() {
  local __var=$1 __out __rc=0
  shift
  log "+ $(shjoin "$@")"
  __out=$("$@") || __rc=$?
  ((__rc == 0)) || die --code="$__rc" "command failed (exit $__rc): $(shjoin "$@")"
  printf -v "$__var" '%s' "$__out"
}

# The TPU's state (READY, PREEMPTED, ...; for a queued resource ACTIVE, WAITING_FOR_RESOURCES,
# ...), or nothing when there is no such TPU.
current_state() {
  if ((queued)); then
    gcloud compute tpus queued-resources describe "$tpu_name" "${loc[@]}" \
      --format='value(state.state)' 2>/dev/null || true
  else
    gcloud compute tpus tpu-vm describe "$tpu_name" "${loc[@]}" --format='value(state)' \
      2>/dev/null || true
  fi
}

wait_until_active() {
  local describe=(gcloud compute tpus queued-resources describe "$tpu_name" "${loc[@]}"
    --format='value(state.state)')
  if ((DRY_RUN)); then
    run "${describe[@]}"
    note "(repeated every ${poll_seconds}s until the state is ACTIVE)"
    return
  fi
  local state
  while true; do
    capture state "${describe[@]}"
    case $state in
      ACTIVE) return ;;
      FAILED | SUSPENDING | SUSPENDED)
        die --code=1 "queued resource $tpu_name is $state (gcloud compute tpus queued-resources" \
          "describe $tpu_name --zone=$zone says why); remove it with: launch/tpu.sh delete" \
          "--queued --tpu_name=$tpu_name --zone=$zone"
        ;;
      *)
        log "queued resource $tpu_name is ${state:-not visible yet}; asking again in ${poll_seconds}s"
        sleep "$poll_seconds"
        ;;
    esac
  done
}

cmd_create() {
  if ((!DRY_RUN)); then
    local state
    state=$(current_state)
    case $state in
      "") ;;
      READY | ACTIVE)
        log "$tpu_name exists and is $state: using it"
        return
        ;;
      CREATING | ACCEPTED | WAITING_FOR_RESOURCES | PROVISIONING)
        log "queued resource $tpu_name was requested before and is $state: waiting for it"
        wait_until_active
        return
        ;;
      *)
        ((recreate)) || die --code=1 "$tpu_name exists and is $state (preempted or being" \
          "repaired?): delete it (launch/tpu.sh delete ...) or pass --recreate"
        log "$tpu_name is $state: deleting it first (--recreate)"
        cmd_delete
        ;;
    esac
  fi
  local tier=()
  ((spot)) && tier=(--spot)
  if ((queued)); then
    local limit=()
    [[ -z $valid_until ]] || limit=(--valid-until-duration="$valid_until")
    run gcloud compute tpus queued-resources create "$tpu_name" --node-id="$tpu_name" "${loc[@]}" \
      --accelerator-type="$accelerator_type" --runtime-version="$runtime_version" \
      "${tier[@]}" "${limit[@]}" "${create_args[@]}"
    wait_until_active
  else
    run gcloud compute tpus tpu-vm create "$tpu_name" "${loc[@]}" \
      --accelerator-type="$accelerator_type" --version="$runtime_version" \
      "${tier[@]}" "${create_args[@]}"
  fi
}

cmd_delete() {
  # --quiet (a gcloud-wide flag) answers the confirmation prompt.
  if ((queued)); then
    # --force deletes the queued resource's VMs first.
    run gcloud compute tpus queued-resources delete "$tpu_name" "${loc[@]}" --force --quiet
  else
    run gcloud compute tpus tpu-vm delete "$tpu_name" "${loc[@]}" --quiet
  fi
}

# --- Code and environment on the workers -----------------------------------------------------

tar_dir=""

# The files git tracks or would track (committed or not; ignored ones such as .venv left out),
# packed from this checkout.
pack_checkout() {
  local root tarball
  root=$(repo_root)
  if ((DRY_RUN)); then
    tarball=${TMPDIR:-/tmp}/$REMOTE_TARBALL
    printf '%s | %s\n' \
      "$(shjoin git -C "$root" ls-files -z --cached --others --exclude-standard)" \
      "$(shjoin tar -czf "$tarball" -C "$root" --null -T -)"
    PACKED=$tarball
    return
  fi
  git -C "$root" rev-parse --git-dir >/dev/null 2>&1 ||
    die "--source=local packs the files git tracks, and $root is not a git checkout" \
      "(use --source=git:URL[@REF])"
  tar_dir=$(mktemp -d)
  tarball=$tar_dir/$REMOTE_TARBALL
  log "+ packing $root into $tarball"
  (
    cd "$root"
    # Files deleted in the working tree are still listed by git until committed; skip them.
    git ls-files -z --cached --others --exclude-standard |
      while IFS= read -r -d '' f; do
        [[ -e $f || -L $f ]] && printf '%s\0' "$f"
      done |
      tar -czf "$tarball" --null -T -
  ) || die --code=1 "could not pack $root into $tarball"
  PACKED=$tarball
}

cmd_setup() {
  local steps=("set -e" "PY=$(shquote "$python")")
  # shellcheck disable=SC2016  # $PY is expanded on the worker
  steps+=('if ! command -v "$PY" >/dev/null 2>&1; then sudo apt-get update -q && sudo apt-get install -y -q "$PY" "$PY-venv"; fi')
  if [[ $source_spec == local ]]; then
    pack_checkout
    run gcloud compute tpus tpu-vm scp "$PACKED" "$tpu_name:$REMOTE_TARBALL" "${loc[@]}" \
      --worker=all "${ssh_flags[@]}"
    steps+=("mkdir -p $REMOTE_DIR" "tar -xzf $REMOTE_TARBALL -C $REMOTE_DIR" "rm -f $REMOTE_TARBALL")
  else
    local spec=${source_spec#git:} url ref=HEAD left right
    url=$spec
    if [[ $spec == *@* ]]; then
      # URL@REF: the last '@' starts a ref when what precedes it has a path (so that
      # git@host:o/r.git and https://user@host/o/r.git stay URLs).
      left=${spec%@*} right=${spec##*@}
      if [[ $right != *:* ]] && { [[ ${left#*://} == */* ]] || [[ $left != *://* && $left == *:* ]]; }; then
        url=$left ref=$right
      fi
    fi
    steps+=("if [ ! -d $REMOTE_DIR/.git ]; then git clone -q $(shquote "$url") $REMOTE_DIR; fi"
      "git -C $REMOTE_DIR fetch -q origin $(shquote "$ref")"
      "git -C $REMOTE_DIR checkout -q FETCH_HEAD")
  fi
  # shellcheck disable=SC2016  # $PY is expanded on the worker
  steps+=("cd $REMOTE_DIR"
    'if [ ! -x .venv/bin/python ]; then "$PY" -m venv .venv; fi'
    ".venv/bin/python -m pip install -q -U pip"
    ".venv/bin/python -m pip install -q -e '.[tpu]'")
  if ((!skip_check)); then
    # All workers at once, as the pod slice needs: each sees the whole slice's devices.
    steps+=(".venv/bin/python -c 'import jax; jax.distributed.initialize(); print(f\"worker {jax.process_index()}: {jax.local_device_count()} local, {jax.device_count()} global {jax.devices()[0].platform} devices, JAX {jax.__version__}\")'")
  fi
  local script
  printf -v script '%s; ' "${steps[@]}"
  tpu_ssh all "${script%; }"
}

# --- The run ---------------------------------------------------------------------------------

cmd_run() {
  if [[ $workdir != gs://* ]]; then
    log "warning: --workdir=$workdir is not a gs:// path: it is on the VM's own disk (each" \
      "worker its own), and gone when the VM is deleted or preempted"
  fi
  # PYTHONUNBUFFERED: the log file sees each line as it is printed. JAX_PLATFORMS is left
  # alone: on a TPU VM JAX itself defaults it to 'tpu,cpu' and fails rather than falling back
  # to the CPU (jax/_src/cloud_tpu_init.py); --env=JAX_PLATFORMS=tpu narrows it further.
  local cmd=(env PYTHONUNBUFFERED=1 "${envs[@]}" .venv/bin/python -m "$module"
    --config="$config" --workdir="$workdir")
  # --distributed: main calls jax.distributed.initialize(), which finds the slice's workers,
  # its own index and the coordinator from the TPU VM's metadata (chestattn_jax/distributed.py).
  ((!distributed)) || cmd+=(--distributed)
  [[ -z $data_dir ]] || cmd+=(--config.data.data_dir="${copy_data_to:-$data_dir}")
  cmd+=("${main_args[@]}")
  if [[ -n $copy_data_to ]]; then
    # The copy runs under worker.sh too: its output goes to run.log, a failure to run.exit;
    # exec then puts the training process in the shell's place, where stop's signal finds it.
    # shellcheck disable=SC2016  # $1, $2 and $@ are bash -c's own arguments
    cmd=(bash -c 'gcloud storage rsync --recursive "$1" "$2" && shift 2 && exec "$@"' copy
      "$data_dir" "$copy_data_to" "${cmd[@]}")
  fi
  tpu_ssh all "cd $REMOTE_DIR && bash launch/worker.sh start -- $(shjoin "${cmd[@]}")"
  if ((wait_run)); then
    wait_for_run
  else
    note "started; follow it with: launch/tpu.sh logs --tpu_name=$tpu_name --zone=$zone"
  fi
}

KEEP_VM=0
# sysexits.h's EX_TEMPFAIL ("try again later"): lets a retry loop tell a preemption from a
# failed run.
EXIT_PREEMPTED=75

# Streams worker 0's log until the run ends; reconnects while it goes on. Returns 0 when the
# run succeeded, 1 when it failed, 75 when the TPU went away under it (preempted); stops with
# a message when worker 0 cannot be reached.
wait_for_run() {
  local logs_cmd="cd $REMOTE_DIR && bash launch/worker.sh logs --lines=$lines"
  local status_cmd="cd $REMOTE_DIR && bash launch/worker.sh status"
  if ((DRY_RUN)); then
    tpu_ssh 0 "$logs_cmd"
    tpu_ssh 0 "$status_cmd"
    note "(the two above repeat while worker 0 reports the run as running)"
    return 0
  fi
  local out st state failures=0
  while true; do
    log "+ streaming worker 0's log"
    gcloud compute tpus tpu-vm ssh "$tpu_name" "${loc[@]}" --worker=0 "${ssh_flags[@]}" \
      --command="$logs_cmd" || true
    st=""
    if out=$(gcloud compute tpus tpu-vm ssh "$tpu_name" "${loc[@]}" --worker=0 "${ssh_flags[@]}" \
      --command="$status_cmd" 2>/dev/null); then
      st=$(printf '%s\n' "$out" | tr -d '\r' | sed -n 's/^chestattn-run: [^ ]* //p' | tail -n 1)
    fi
    case $st in
      "exited 0")
        log "the run finished"
        return 0
        ;;
      exited*)
        log "the run failed (${st}); its log: launch/tpu.sh logs --tpu_name=$tpu_name" \
          "--zone=$zone --no_follow"
        return 1
        ;;
      not-started)
        die --code=1 "worker 0 has no run (launch/tpu.sh run ... starts one)"
        ;;
      running*)
        failures=0
        log "the run goes on; reconnecting"
        ;;
      *)
        failures=$((failures + 1))
        state=$(current_state)
        if [[ $state != READY && $state != ACTIVE ]]; then
          log "$tpu_name is ${state:-gone} (preempted?). The checkpoints in $workdir are kept:" \
            "the same command with --recreate resumes from the latest one on a new VM."
          return "$EXIT_PREEMPTED"
        fi
        if ((failures >= 3)); then
          KEEP_VM=1
          die --code=1 "cannot reach worker 0 of $tpu_name ($state); the run may go on." \
            "Check with: launch/tpu.sh status --tpu_name=$tpu_name --zone=$zone; delete the" \
            "VM with launch/tpu.sh delete when done"
        fi
        ;;
    esac
    sleep "$poll_seconds"
  done
}

on_exit() {
  local rc=$?
  trap - EXIT
  [[ -z $tar_dir ]] || rm -rf "$tar_dir"
  if ((DELETE_ON_EXIT)); then
    if ((KEEP_VM)); then
      log "not deleting $tpu_name: the run on it may still be going"
    else
      log "deleting $tpu_name (--delete_after)"
      (cmd_delete) || rc=1
    fi
  fi
  exit "$rc"
}

DELETE_ON_EXIT=0
if ((!DRY_RUN)); then
  trap on_exit EXIT
  # Ctrl-C stops the watching, not the run: keep the VM.
  trap 'KEEP_VM=1; log "interrupted; the run (if started) goes on"; exit 130' INT
fi

resolve_project
case $command in
  create) cmd_create ;;
  setup) cmd_setup ;;
  run) cmd_run ;;
  logs)
    args="--lines=$lines"
    ((follow)) || args+=" --no_follow"
    tpu_ssh "$worker" "cd $REMOTE_DIR && bash launch/worker.sh logs $args"
    ;;
  status)
    if ((queued)); then
      run gcloud compute tpus queued-resources describe "$tpu_name" "${loc[@]}" \
        --format='value(state.state)'
    else
      run gcloud compute tpus tpu-vm describe "$tpu_name" "${loc[@]}" \
        --format='value(state,acceleratorType)'
    fi
    tpu_ssh all "cd $REMOTE_DIR && bash launch/worker.sh status"
    ;;
  stop) tpu_ssh all "cd $REMOTE_DIR && bash launch/worker.sh stop" ;;
  delete) cmd_delete ;;
  all)
    cmd_create
    ((DRY_RUN)) || DELETE_ON_EXIT=$delete_after
    cmd_setup
    ((detach)) || wait_run=1
    rc=0
    cmd_run || rc=$?
    if ((DRY_RUN && delete_after)); then
      cmd_delete
    fi
    exit "$rc"
    ;;
esac
