#!/usr/bin/env bash
# Runs on each machine that trains (a Cloud TPU VM worker, or a GPU host): starts one command
# detached from the ssh session that launched it, and answers for it afterwards. launch/tpu.sh
# calls it over `gcloud compute tpus tpu-vm ssh`; it works the same by hand.
#
#   launch/worker.sh start [--log_dir=DIR] -- COMMAND [ARG...]
#   launch/worker.sh status [--log_dir=DIR]
#   launch/worker.sh logs [--log_dir=DIR] [--lines=N] [--no_follow]
#   launch/worker.sh stop [--log_dir=DIR] [--signal=TERM]
#
# Files in the log folder (default ~/chestattn-logs): run.log (stdout and stderr), run.pid (the
# command's process id), run.exit (its exit status, written when it ends), run.cmd (the command).
# Every subcommand prints one status line that launch/tpu.sh reads:
#   chestattn-run: HOST running PID | exited STATUS | exited unknown | not-started
set -euo pipefail

PROG=worker.sh
DRY_RUN=0
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

log_dir=${HOME:?}/chestattn-logs
lines=100
follow=1
signal=TERM

is_running() {
  local pid
  [[ -f $log_dir/run.pid ]] || return 1
  pid=$(<"$log_dir/run.pid")
  [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null
}

status_line() {
  local host
  host=$(hostname)
  if is_running; then
    echo "chestattn-run: $host running $(<"$log_dir/run.pid")"
  elif [[ -f $log_dir/run.exit ]]; then
    echo "chestattn-run: $host exited $(<"$log_dir/run.exit")"
  elif [[ -f $log_dir/run.pid ]]; then
    # Gone without an exit status: SIGKILL, or the machine restarted under it.
    echo "chestattn-run: $host exited unknown"
  else
    echo "chestattn-run: $host not-started"
  fi
}

# The detached supervisor: starts the command, records its pid, waits, records its exit status.
# It ignores TERM/INT/HUP itself, so that a preemption's SIGTERM reaches the training process
# alone (which checkpoints and exits) and the supervisor lives on to write run.exit.
supervise() {
  local child rc=0
  "$@" &
  child=$!
  echo "$child" >"$log_dir/run.pid"
  trap '' TERM INT HUP
  wait "$child" || rc=$?
  echo "$rc" >"$log_dir/run.exit"
}

cmd_start() {
  (($# > 0)) || die "start needs a command after --"
  mkdir -p "$log_dir"
  if is_running; then
    die --code=1 "a run is still going here (pid $(<"$log_dir/run.pid"), log $log_dir/run.log);" \
      "stop it first (launch/worker.sh stop, or launch/tpu.sh stop)"
  fi
  rm -f "$log_dir/run.exit" "$log_dir/run.pid"
  shjoin "$@" >"$log_dir/run.cmd"
  echo >>"$log_dir/run.cmd"
  # nohup and a closed stdin detach it from the ssh session; the supervisor is this script again.
  nohup bash "${BASH_SOURCE[0]}" _supervise --log_dir="$log_dir" -- "$@" \
    >"$log_dir/run.log" 2>&1 </dev/null &
  local i
  for ((i = 0; i < 50; i++)); do
    [[ -f $log_dir/run.pid ]] && break
    sleep 0.1
  done
  log "started $(shjoin "$@")"
  log "log: $log_dir/run.log"
  status_line
}

cmd_logs() {
  [[ -f $log_dir/run.log ]] || die --code=1 "no run log at $log_dir/run.log: nothing was started here"
  if ((follow)) && is_running; then
    # --pid ends the tail when the run ends (GNU tail, as on the TPU VM images' Ubuntu).
    tail -n "$lines" --pid="$(<"$log_dir/run.pid")" -F "$log_dir/run.log" || true
  else
    tail -n "$lines" "$log_dir/run.log"
  fi
  status_line
}

cmd_stop() {
  if is_running; then
    local pid
    pid=$(<"$log_dir/run.pid")
    log "sending SIG$signal to $pid"
    kill -s "$signal" "$pid"
  else
    log "nothing running"
  fi
  status_line
}

command=${1:-}
[[ -n $command ]] || {
  usage >&2
  exit 2
}
shift
args=()
while (($# > 0)); do
  case $1 in
    --log_dir=*) log_dir=$(opt_value "$1") ;;
    --lines=*) lines=$(opt_value "$1") ;;
    --no_follow) follow=0 ;;
    --signal=*) signal=$(opt_value "$1") ;;
    -h | --help)
      usage
      exit 0
      ;;
    --)
      shift
      args=("$@")
      break
      ;;
    *) die "unknown option: $1" ;;
  esac
  shift
done

case $command in
  start) cmd_start "${args[@]}" ;;
  _supervise) supervise "${args[@]}" ;;
  status) status_line ;;
  logs) cmd_logs ;;
  stop) cmd_stop ;;
  -h | --help | help) usage ;;
  *) die "unknown command: $command (start, status, logs, stop)" ;;
esac
