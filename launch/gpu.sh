#!/usr/bin/env bash
# GPU hosts without a scheduler: one process per node (it drives all of the
# node's GPUs) or, with --per_gpu, one per GPU, started over ssh; process 0 on
# the first host is the coordinator.
#
#   launch/gpu.sh [--dry-run] [--per_gpu] [--gpus_per_node=8] [--port=PORT] \
#     [--coordinator=HOST] [--remote_dir=DIR] [--python=python3] \
#     node1,node2 -- --config=configs/ddpm_cifar10.py --workdir=/shared/runs/ddpm
#
# The code and the workdir must be at the same path on every host (a shared file
# system, or a gs:// workdir); the code is run from --remote_dir (default: this
# checkout's path). TFDS_DATA_DIR, when set here, is passed on. A host named
# `localhost` runs without ssh. Logs: $LOG_DIR/gpu_<process>.log (default logs/).
# Waits for every process; fails if any does.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

per_gpu=0 gpus=8 port=${PORT:-29500} coordinator="" remote_dir=$REPO_ROOT
python=${PYTHON:-python3}
while [[ $# -gt 0 && "$1" == --* && "$1" != "--" ]]; do
  case $1 in
    --dry-run) DRY_RUN=1 ;;
    --per_gpu) per_gpu=1 ;;
    --gpus_per_node=*) gpus=${1#*=} ;;
    --port=*) port=${1#*=} ;;
    --coordinator=*) coordinator=${1#*=} ;;
    --remote_dir=*) remote_dir=${1#*=} ;;
    --python=*) python=${1#*=} ;;
    *) die "unknown option $1 (see the top of $0)" ;;
  esac
  shift
done
if [[ $# -lt 2 || "$2" != "--" ]]; then
  die "usage: $0 [--dry-run] [--per_gpu] [options] HOST[,HOST...] -- TRAIN_FLAGS..."
fi
IFS=, read -ra hosts <<< "$1"
shift 2
[[ "$gpus" =~ ^[1-9][0-9]*$ ]] || die "--gpus_per_node must be a positive integer"

per_host=$((per_gpu ? gpus : 1))
num_processes=$((${#hosts[@]} * per_host))
if [[ -z "$coordinator" && "${hosts[0]}" == localhost && ${#hosts[@]} -gt 1 ]]; then
  die "the other hosts cannot reach 'localhost': pass --coordinator=<this host's address>"
fi
address="${coordinator:-${hosts[0]}}:$port"
log_dir=${LOG_DIR:-logs}
((DRY_RUN)) || mkdir -p "$log_dir"
for ((n = 0; n < ${#hosts[@]}; n++)); do
  for ((g = 0; g < per_host; g++)); do
    id=$((n * per_host + g))
    env=()
    ((per_gpu)) && env+=("CUDA_VISIBLE_DEVICES=$g")
    [[ -n "${TFDS_DATA_DIR:-}" ]] && env+=("TFDS_DATA_DIR=$TFDS_DATA_DIR")
    cmd=(env "${env[@]}" "$python" -m gen_jax.main "$@"
         "--coordinator_address=$address" "--num_processes=$num_processes"
         "--process_id=$id")
    via=(ssh -o BatchMode=yes "${hosts[n]}")
    [[ "${hosts[n]}" == localhost ]] && via=(bash -c)
    run_bg "$log_dir/gpu_$id.log" "${via[@]}" \
      "cd $(quote "$remote_dir") && exec $(quote "${cmd[@]}")"
  done
done
((DRY_RUN)) || wait_all "$log_dir/gpu_*.log"
