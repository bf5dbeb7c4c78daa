# shellcheck shell=bash
# Helpers shared by the launch scripts; sourced, never run. The sourcing script sets PROG (its
# name, for messages) and DRY_RUN (0 or 1) before calling anything here.

# Messages go to stderr, so that under --dry-run stdout holds nothing but the commands.
log() { printf '%s: %s\n' "$PROG" "$*" >&2; }

# die [--code=N] MESSAGE: exit with a readable message (exit status 2 by default: a usage error).
die() {
  local code=2
  if [[ $1 == --code=* ]]; then
    code=${1#--code=}
    shift
  fi
  printf '%s: error: %s\n' "$PROG" "$*" >&2
  exit "$code"
}

# shquote ARG: ARG as one word for a POSIX shell; bare when that is safe, else in single quotes.
# Used for what --dry-run prints and for the command strings run on remote machines, so that
# values with spaces or quotes arrive as one argument.
shquote() {
  local s=$1 q="'\\''"
  if [[ -n $s && $s =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then
    printf '%s' "$s"
  elif [[ $s =~ ^(--[A-Za-z0-9_.-]+=)(.+)$ ]]; then
    # --flag='value': the same word, easier to read.
    printf '%s' "${BASH_REMATCH[1]}"
    shquote "${BASH_REMATCH[2]}"
  else
    printf "'%s'" "${s//\'/$q}"
  fi
}

# shjoin ARG...: the arguments as one shell command line.
shjoin() {
  local out="" a
  for a in "$@"; do
    out+="${out:+ }$(shquote "$a")"
  done
  printf '%s' "$out"
}

# run CMD [ARG...]: print the command under --dry-run; otherwise echo it to stderr and run it.
# A failure stops the script with the command and its exit status.
run() {
  if ((DRY_RUN)); then
    printf '%s\n' "$(shjoin "$@")"
    return 0
  fi
  log "+ $(shjoin "$@")"
  local rc=0
  "$@" || rc=$?
  ((rc == 0)) || die --code="$rc" "command failed (exit $rc): $(shjoin "$@")"
}

# note TEXT: a comment line in the --dry-run listing (stdout), a log line otherwise.
note() {
  if ((DRY_RUN)); then
    printf '# %s\n' "$*"
  else
    log "$*"
  fi
}

# need_value OPTION VALUE: stop with a message naming OPTION when VALUE is empty.
need_value() {
  [[ -n $2 ]] || die "$1 is required (see --help)"
}

# opt_value ARG: the part after '=' of an --option=value argument, refusing an empty value.
opt_value() {
  [[ $1 == *=* ]] || die "${1} needs a value: ${1}=..."
  printf '%s' "${1#*=}"
}

# repo_root: the checkout that holds this launch/ folder.
repo_root() {
  local here
  here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
  dirname "$here"
}

# config_file SPEC: the file part of --config=FILE[:ARG].
config_file() {
  printf '%s' "${1%%:*}"
}

# Empty arrays under `set -u`, ${var,,} and the like need bash 4.4; macOS still ships 3.2.
if ((BASH_VERSINFO[0] < 4 || (BASH_VERSINFO[0] == 4 && BASH_VERSINFO[1] < 4))); then
  printf '%s: error: needs bash 4.4 or newer, this is %s (macOS: brew install bash)\n' \
    "${PROG:-launch}" "$BASH_VERSION" >&2
  exit 2
fi
