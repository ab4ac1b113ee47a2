#!/usr/bin/env bash
# N processes on localhost over CPU devices: the multi-process path the tests use.
#
#   launch/local.sh [--dry-run] NUM_PROCESSES DEVICES_PER_PROCESS -- \
#     --config=configs/vae_digits.py:smoke --workdir=runs/local
#
# Each process gets --coordinator_address/--num_processes/--process_id and
# XLA_FLAGS for its simulated devices; collectives use gloo. Each process logs
# to logs/local_<i>.log; the script waits for all and fails if any does.
set -euo pipefail

dry_run=0
if [[ "${1:-}" == "--dry-run" ]]; then dry_run=1; shift; fi
if [[ $# -lt 3 || "$3" != "--" ]]; then
  echo "usage: $0 [--dry-run] NUM_PROCESSES DEVICES_PER_PROCESS -- ARGS..." >&2
  exit 2
fi
num_processes=$1 devices=$2
shift 3
port=${PORT:-$((20000 + RANDOM % 20000))}
python=${PYTHON:-python}

pids=()
mkdir -p logs
for ((i = 0; i < num_processes; i++)); do
  cmd=(env "XLA_FLAGS=--xla_force_host_platform_device_count=${devices}"
       "$python" -m gen_jax.main "$@" "--coordinator_address=127.0.0.1:${port}"
       "--num_processes=${num_processes}" "--process_id=${i}")
  if ((dry_run)); then
    printf '%q ' "${cmd[@]}"; echo "> logs/local_${i}.log 2>&1 &"
    continue
  fi
  "${cmd[@]}" > "logs/local_${i}.log" 2>&1 &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
if ((status)); then echo "a process failed; see logs/local_*.log" >&2; fi
exit $status
