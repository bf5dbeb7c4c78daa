#!/usr/bin/env bash
# Trains on the GPUs of this machine, or of several machines (one process per machine).
# Run `launch/gpu.sh --help` for the options.
set -euo pipefail

PROG=gpu.sh
DRY_RUN=0
module=chestattn_jax.main  # --experiment: chestattn_jax.experiment
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<'EOF'
Usage: launch/gpu.sh --config=FILE[:ARG] --workdir=DIR [options] [-- extra arguments for main]

One machine: one process drives all of its GPUs (the train step is one jax.jit over a mesh of
every local device, the global batch split across them), so this is just
`python -m chestattn_jax.main` with the GPUs picked and the data folder set:

  launch/gpu.sh --config=configs/chexpert.py:class --workdir=workdirs/cx \
      --data_dir=/data/prepared --gpus=0,1,2,3 -- --config.model.dtype=bfloat16

Several machines: one process per machine, started together (JAX's multi-controller model).
Each process gets chestattn_jax.main's --coordinator_address=HOST:PORT (process 0's machine and
a free port), --num_processes=N and --process_id=I (see chestattn_jax/distributed.py).
  - From here over ssh: --hosts=gpu1,gpu2,... runs process I on the I-th host; the first host is
    the coordinator. Each host needs the checkout at --remote_dir (default: this directory's
    path) with the package installed for --python, and must reach the first host on --port.
    Output comes back prefixed with [host]; the exit status is the first failure's.
  - By hand, on each machine: --num_processes=N --process_id=I --coordinator_address=HOST:PORT.
The workdir must then be one that every machine sees (a shared file system, or gs://).

Options:
  --config=FILE[:ARG]       the config (required)
  --workdir=DIR             checkpoints, metrics, evaluation output (required)
  --data_dir=DIR            the prepared data (becomes --config.data.data_dir=DIR)
  --gpus=0,1,...            CUDA_VISIBLE_DEVICES for the process (default: every GPU)
  --env=KEY=VALUE           set in the training process's environment (repeatable)
  --config.FIELD=VALUE      passed on to chestattn_jax.main, as is everything after --
  --experiment              run python -m chestattn_jax.experiment instead (--workdir is the
                            experiment's root; give --cell=N after --)
  --python=PY               the interpreter (default: $PYTHON, else python3)
  --hosts=H1,H2,...         several machines over ssh (H may be user@host; ssh config aliases work)
  --port=P                  coordinator port with --hosts (default 1234)
  --coordinator_address=H:P process 0's address (default with --hosts: first host:--port)
  --num_processes=N         by hand: the number of processes
  --process_id=I            by hand: this process's index, 0 .. N-1
  --remote_dir=DIR          with --hosts: the checkout on every host (default: current directory)
  --dry-run                 print the commands instead of running them
  -h, --help                this text
EOF
}

config="" workdir="" data_dir="" gpus=""
envs=() main_args=()
python=${PYTHON:-python3}
hosts="" port=1234 coordinator="" num_processes="" process_id=""
remote_dir=$PWD

while (($# > 0)); do
  case $1 in
    --config=*) config=$(opt_value "$1") ;;
    --workdir=*) workdir=$(opt_value "$1") ;;
    --data_dir=*) data_dir=$(opt_value "$1") ;;
    --gpus=*) gpus=$(opt_value "$1") ;;
    --env=*)
      kv=$(opt_value "$1")
      [[ $kv =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "--env takes KEY=VALUE, got '$kv'"
      envs+=("$kv")
      ;;
    --config.*=*) main_args+=("$1") ;;
    --python=*) python=$(opt_value "$1") ;;
    --hosts=*) hosts=$(opt_value "$1") ;;
    --port=*) port=$(opt_value "$1") ;;
    --coordinator_address=*) coordinator=$(opt_value "$1") ;;
    --num_processes=*) num_processes=$(opt_value "$1") ;;
    --process_id=*) process_id=$(opt_value "$1") ;;
    --remote_dir=*) remote_dir=$(opt_value "$1") ;;
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
    --config | --workdir | --data_dir | --gpus | --env | --python | --hosts | --port | \
      --coordinator_address | --num_processes | --process_id | --remote_dir)
      die "$1 needs a value: $1=..."
      ;;
    *) die "unknown option '$1' (see --help; arguments for chestattn_jax.main go after --)" ;;
  esac
  shift
done

need_value --config "$config"
need_value --workdir "$workdir"
[[ -z $gpus || $gpus =~ ^[0-9]+(,[0-9]+)*$ ]] || die "--gpus takes indices like 0,1,2, got '$gpus'"
[[ $port =~ ^[0-9]+$ ]] || die "--port takes a number, got '$port'"

# The command every process runs, before the per-process flags.
base=(env)
[[ -z $gpus ]] || base+=(CUDA_VISIBLE_DEVICES="$gpus")
base+=("${envs[@]}" "$python" -m "$module" --config="$config" --workdir="$workdir")
[[ -z $data_dir ]] || base+=(--config.data.data_dir="$data_dir")

if [[ -z $hosts ]]; then
  # One process here: alone, or one of several started by hand.
  multi=()
  if [[ -n $num_processes || -n $process_id || -n $coordinator ]]; then
    [[ $num_processes =~ ^[1-9][0-9]*$ ]] || die "--num_processes takes a positive number" \
      "(with --process_id and --coordinator_address)"
    [[ $process_id =~ ^[0-9]+$ ]] || die "--process_id is required with --num_processes (0 .. N-1)"
    ((process_id < num_processes)) ||
      die "--process_id=$process_id is outside 0..$((num_processes - 1))"
    need_value --coordinator_address "$coordinator"
    multi=(--coordinator_address="$coordinator" --num_processes="$num_processes"
      --process_id="$process_id")
  fi
  run "${base[@]}" "${multi[@]}" "${main_args[@]}"
  exit 0
fi

# --- Several hosts over ssh ------------------------------------------------------------------

[[ -z $num_processes && -z $process_id ]] ||
  die "--hosts sets --num_processes and --process_id itself; give one or the other"
IFS=, read -r -a host_list <<<"$hosts"
for h in "${host_list[@]}"; do
  [[ -n $h ]] || die "--hosts has an empty entry: '$hosts'"
done
n=${#host_list[@]}
if [[ -z $coordinator ]]; then
  first=${host_list[0]}
  coordinator=${first#*@}:$port
fi

remote_command() { # INDEX: the shell command line for process INDEX
  printf 'cd %s && %s' "$(shquote "$remote_dir")" "$(shjoin "${base[@]}" \
    --coordinator_address="$coordinator" --num_processes="$n" --process_id="$1" "${main_args[@]}")"
}

if ((DRY_RUN)); then
  note "$n processes, coordinator $coordinator; the ssh commands run in parallel"
  for i in "${!host_list[@]}"; do
    printf '%s &\n' "$(shjoin ssh -o BatchMode=yes "${host_list[$i]}" "$(remote_command "$i")")"
  done
  echo wait
  exit 0
fi

# prefix HOST: copy stdin to stdout, each line led by [HOST].
prefix() {
  local line
  while IFS= read -r line || [[ -n $line ]]; do
    printf '[%s] %s\n' "$1" "$line"
  done
}

pids=()
stop_all() {
  local p
  for p in "${pids[@]}"; do
    kill "$p" 2>/dev/null || true
  done
  log "interrupted: the ssh sessions are closed; processes on the hosts may go on"
  exit 130
}

# Starts process I on the I-th host, all at once; returns the first failure's exit status.
run_on_hosts() {
  local i h rc status=0
  trap stop_all INT TERM
  log "$n processes, coordinator $coordinator"
  for i in "${!host_list[@]}"; do
    h=${host_list[$i]}
    log "+ $(shjoin ssh -o BatchMode=yes "$h" "$(remote_command "$i")")"
    # BatchMode: fail rather than ask for a password in the middle of a parallel start.
    ssh -o BatchMode=yes "$h" "$(remote_command "$i")" > >(prefix "$h") 2>&1 &
    pids+=("$!")
  done
  for i in "${!pids[@]}"; do
    rc=0
    wait "${pids[$i]}" || rc=$?
    if ((rc != 0)); then
      log "error: process $i on ${host_list[$i]} failed (exit $rc)"
      ((status != 0)) || status=$rc
    fi
  done
  return "$status"
}

run_on_hosts
