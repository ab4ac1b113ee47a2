#!/usr/bin/env bash
# N processes on localhost over CPU devices: the multi-process path the tests use,
# for trying multi-host behaviour (sharding, checkpoints, data) on a laptop.
#
#   launch/local.sh [--dry-run] NUM_PROCESSES DEVICES_PER_PROCESS -- \
#     --config=configs/vae_digits.py:smoke --workdir=runs/local
#
# Process i gets --coordinator_address=127.0.0.1:PORT --num_processes=N
# --process_id=i, and XLA_FLAGS (yours, if set, then the flag for
# DEVICES_PER_PROCESS simulated CPU devices); collectives use gloo. Logs:
# $LOG_DIR/local_<i>.log (default logs/). Waits for all processes and fails if
# any does. PORT and PYTHON may be set in the environment.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

if [[ "${1:-}" == "--dry-run" ]]; then DRY_RUN=1; shift; fi
if [[ $# -lt 3 || "$3" != "--" ]]; then
  echo "usage: $0 [--dry-run] NUM_PROCESSES DEVICES_PER_PROCESS -- TRAIN_FLAGS..." >&2
  exit 2
fi
num_processes=$1 devices=$2
shift 3
port=${PORT:-$((20000 + RANDOM % 20000))}
log_dir=${LOG_DIR:-logs}

((DRY_RUN)) || mkdir -p "$log_dir"
for ((i = 0; i < num_processes; i++)); do
  run_bg "$log_dir/local_$i.log" \
    env "XLA_FLAGS=${XLA_FLAGS:+$XLA_FLAGS }--xla_force_host_platform_device_count=$devices" \
    "${PYTHON:-python}" -m gen_jax.main "$@" \
    "--coordinator_address=127.0.0.1:$port" \
    "--num_processes=$num_processes" "--process_id=$i"
done
((DRY_RUN)) || wait_all "$log_dir/local_*.log"
