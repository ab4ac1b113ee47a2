# Sourced by the launchers: the --dry-run switch and the few helpers they share.
#
# With DRY_RUN=1 every command is printed, shell-quoted, one per line, instead of
# being run: what you read is exactly what would run (tests parse these lines).

DRY_RUN=${DRY_RUN:-0}
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

die() { echo "error: $*" >&2; exit 2; }

quote() {  # the arguments as one shell line: plain words bare, others in '...'
  local out="" arg flag q="'"
  for arg in "$@"; do
    flag=""
    if [[ "$arg" =~ ^--[A-Za-z0-9_-]+= ]]; then  # --flag='value', not '--flag=value'
      flag=${BASH_REMATCH[0]} arg=${arg#*=}
    fi
    if [[ -z "$arg" || "$arg" =~ [^A-Za-z0-9_./:=,@%+-] ]]; then
      arg="'${arg//$q/$q\\$q$q}'"
    fi
    out+="${out:+ }$flag$arg"
  done
  printf '%s\n' "$out"
}

run() {  # runs "$@", or prints it under --dry-run
  if ((DRY_RUN)); then quote "$@"; else "$@"; fi
}

run_bg() {  # LOG CMD...: runs CMD in the background with its output in LOG
  local log=$1; shift
  if ((DRY_RUN)); then echo "$(quote "$@") > $(quote "$log") 2>&1 &"; return; fi
  "$@" > "$log" 2>&1 &
  PIDS+=($!)
}

forward_stop() {  # SIGTERM / SIGINT to the launcher: passed on to its processes
  echo "stopping: SIGTERM to ${#PIDS[@]} process(es); they save and exit" >&2
  kill -TERM "${PIDS[@]}" 2>/dev/null || true
}

wait_all() {  # waits for every run_bg process; fails if any did
  local pid status=0
  # A sweep prunes a trial, and a scheduler preempts a job, by SIGTERM to the
  # launcher: every process gets it (each saves a checkpoint) and is waited for.
  trap forward_stop TERM INT
  for pid in "${PIDS[@]}"; do
    # `wait` returns early when a trapped signal arrives: wait again until
    # the process is gone, then read its own exit status.
    while kill -0 "$pid" 2>/dev/null; do wait "$pid" || true; done
    wait "$pid" || status=1
  done
  trap - TERM INT
  if ((status)); then echo "a process failed; see $1" >&2; fi
  return $status
}

PIDS=()
