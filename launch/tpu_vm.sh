#!/usr/bin/env bash
# Cloud TPU VMs and slices: create one, put this code on every worker, train on
# all workers at once. jax.distributed.initialize() (gen_jax's --distributed)
# finds the slice's workers by itself; the workdir and TFDS_DATA_DIR live on
# Cloud Storage, which every worker reads and writes.
#
#   launch/tpu_vm.sh [--dry-run] COMMAND [--option=value ...] [-- TRAIN_FLAGS...]
#
#   create  a TPU VM or slice; --queued asks through a queued resource (and
#           waits until it is ACTIVE), --spot for spot capacity
#   setup   copy this checkout's HEAD to every worker (or clone --repo at --ref)
#           and install it: pip install -e '.[tpu]'
#   train   start training on every worker (--worker=all), in the background;
#           output in ~/gen_jax_train.log on each worker
#   up      create, setup, train
#   run     train on every worker in the foreground, the flags after -- (their
#           own gs:// --workdir) as they are; SIGTERM or SIGINT runs `stop`
#           (every worker saves and exits 0) and waits: a sweep's trial
#           launcher (gen-jax sweep --launcher='launch/tpu_vm.sh run
#           --name=NAME --zone=ZONE --' --trial_root=gs://BUCKET/sweeps/x)
#   stop    stop training on every worker (SIGTERM: each saves a checkpoint)
#   ssh     a shell on --worker (default 0), or run the command after --
#   logs    follow the training log of --worker (default 0)
#   delete  delete the VM (with --queued: the queued resource and its VM)
#
# Options (environment defaults in brackets):
#   --name [TPU_NAME]  --zone [ZONE]  --project [PROJECT; else gcloud's default]
#   --type [ACCELERATOR_TYPE; v5litepod-16]  --version [RUNTIME_VERSION; by type]
#   --workdir [WORKDIR; a gs:// URL]  --tfds_data_dir [TFDS_DATA_DIR; gs:// URL]
#   --spot  --queued  --repo=GIT_URL  --ref=BRANCH|TAG|COMMIT  --worker=N
#
#   launch/tpu_vm.sh up --name=gj --zone=us-west4-a --type=v5litepod-16 --queued \
#     --spot --workdir=gs://BUCKET/runs/lm --tfds_data_dir=gs://BUCKET/tfds \
#     -- --config=configs/lm_lm1b.py
#
# A spot slice that was preempted is gone: `delete`, then `up` again with the
# same --workdir; training resumes from the last checkpoint there.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

name=${TPU_NAME:-} zone=${ZONE:-} project=${PROJECT:-}
type=${ACCELERATOR_TYPE:-v5litepod-16} version=${RUNTIME_VERSION:-}
workdir=${WORKDIR:-} tfds_data_dir=${TFDS_DATA_DIR:-}
spot=0 queued=0 repo="" ref=HEAD worker=""
log='~/gen_jax_train.log'  # expanded by the worker's shell

if [[ "${1:-}" == "--dry-run" ]]; then DRY_RUN=1; shift; fi
command=${1:-}
[[ -n "$command" ]] || die "usage: $0 [--dry-run] COMMAND [options] [-- TRAIN_FLAGS] (see the top of $0)"
shift
while [[ $# -gt 0 && "$1" != "--" ]]; do
  case $1 in
    --dry-run) DRY_RUN=1 ;;
    --name=*) name=${1#*=} ;;
    --zone=*) zone=${1#*=} ;;
    --project=*) project=${1#*=} ;;
    --type=*) type=${1#*=} ;;
    --version=*) version=${1#*=} ;;
    --workdir=*) workdir=${1#*=} ;;
    --tfds_data_dir=*) tfds_data_dir=${1#*=} ;;
    --spot) spot=1 ;;
    --queued) queued=1 ;;
    --repo=*) repo=${1#*=} ;;
    --ref=*) ref=${1#*=} ;;
    --worker=*) worker=${1#*=} ;;
    *) die "unknown option $1 (options are --name=VALUE style; see the top of $0)" ;;
  esac
  shift
done
[[ "${1:-}" == "--" ]] && shift
[[ -n "$name" ]] || die "--name (or TPU_NAME) is required"
[[ -n "$zone" ]] || die "--zone (or ZONE) is required"

if [[ -z "$version" ]]; then  # the runtime image for the TPU generation
  case $type in
    v5litepod-*) version=v2-alpha-tpuv5-lite ;;
    v5p-*) version=v2-alpha-tpuv5 ;;
    v6e-*) version=v2-alpha-tpuv6e ;;
    v4-* | v3-* | v2-*) version=tpu-ubuntu2204-base ;;
    *) die "no default runtime version for --type=$type: pass --version=..." ;;
  esac
fi
gcloud_tpu=(gcloud compute tpus)
scope=("--zone=$zone")
[[ -n "$project" ]] && scope+=("--project=$project")

on_workers() {  # WORKER COMMAND: runs a shell command on the worker(s)
  run "${gcloud_tpu[@]}" tpu-vm ssh "$name" "${scope[@]}" "--worker=$1" "--command=$2"
}

create() {
  local extra=()
  ((spot)) && extra+=(--spot)
  if ((queued)); then
    run "${gcloud_tpu[@]}" queued-resources create "$name" "--node-id=$name" \
      "${scope[@]}" "--accelerator-type=$type" "--runtime-version=$version" "${extra[@]}"
    wait_active
  else
    run "${gcloud_tpu[@]}" tpu-vm create "$name" "${scope[@]}" \
      "--accelerator-type=$type" "--version=$version" "${extra[@]}"
  fi
}

wait_active() {  # a queued resource is usable once its state is ACTIVE
  local describe=("${gcloud_tpu[@]}" queued-resources describe "$name" "${scope[@]}"
                  "--format=value(state.state)")
  if ((DRY_RUN)); then echo "# every 30 s until ACTIVE:"; quote "${describe[@]}"; return; fi
  local state
  while true; do
    state=$("${describe[@]}")
    echo "queued resource $name: $state" >&2
    case $state in
      ACTIVE) return ;;
      FAILED | SUSPENDED) die "queued resource $name is $state; delete it and retry" ;;
    esac
    sleep 30
  done
}

setup() {
  local install="cd ~/gen_jax && python3 -m pip install -q -e \".[tpu]\""
  if [[ -n "$repo" ]]; then
    on_workers all "rm -rf ~/gen_jax && git clone -q $(quote "$repo") ~/gen_jax && git -C ~/gen_jax checkout -q $(quote "$ref") && $install"
    return
  fi
  local tarball="/tmp/gen_jax-$name.tar.gz"
  if [[ -n "$(git -C "$REPO_ROOT" status --porcelain --untracked-files=no)" ]]; then
    echo "warning: uncommitted changes are not copied; the workers get HEAD" >&2
  fi
  run git -C "$REPO_ROOT" archive --format=tar.gz --prefix=gen_jax/ -o "$tarball" HEAD
  run "${gcloud_tpu[@]}" tpu-vm scp "$tarball" "$name:gen_jax.tar.gz" "${scope[@]}" --worker=all
  on_workers all "rm -rf ~/gen_jax && tar -xzf ~/gen_jax.tar.gz && $install"
}

train() {
  [[ "$workdir" == gs://* ]] || die "--workdir (or WORKDIR) must be a gs:// URL that every worker shares, got '$workdir'"
  local env=()
  if [[ -n "$tfds_data_dir" ]]; then
    [[ "$tfds_data_dir" == gs://* ]] || die "--tfds_data_dir must be a gs:// URL, got '$tfds_data_dir'"
    env+=("TFDS_DATA_DIR=$tfds_data_dir")
  fi
  local cmd=(env "${env[@]}" python3 -m gen_jax.main --distributed "--workdir=$workdir" "$@")
  # setsid + nohup: training outlives the ssh session that started it.
  on_workers all "cd ~/gen_jax && setsid nohup $(quote "${cmd[@]}") > $log 2>&1 < /dev/null &"
}

stop_workers() {
  on_workers all "pkill -TERM -f \"[g]en_jax.main\" || true"
}

run_foreground() {
  [[ " $* " == *" --workdir=gs://"* ]] || die "run: the flags after -- need a gs:// --workdir that every worker shares, got: $*"
  local env=()
  [[ -n "$tfds_data_dir" ]] && env+=("TFDS_DATA_DIR=$tfds_data_dir")
  local cmd=(env "${env[@]}" python3 -m gen_jax.main "$@" --distributed)
  if ((DRY_RUN)); then
    echo "# on SIGTERM or SIGINT:"; stop_workers
    on_workers all "cd ~/gen_jax && $(quote "${cmd[@]}")"; return
  fi
  trap stop_workers TERM INT
  on_workers all "cd ~/gen_jax && $(quote "${cmd[@]}")" &
  local pid=$!
  # `wait` returns early on a trapped signal: wait until ssh ends, then read it.
  while kill -0 "$pid" 2>/dev/null; do wait "$pid" || true; done
  wait "$pid"
}

case $command in
  create) create ;;
  setup) setup ;;
  train) train "$@" ;;
  up) create; setup; train "$@" ;;
  run) run_foreground "$@" ;;
  stop) stop_workers ;;
  ssh)
    if [[ $# -gt 0 ]]; then on_workers "${worker:-0}" "$(quote "$@")"
    else run "${gcloud_tpu[@]}" tpu-vm ssh "$name" "${scope[@]}" "--worker=${worker:-0}"; fi ;;
  logs) on_workers "${worker:-0}" "tail -n 200 -F $log" ;;
  delete)
    if ((queued)); then
      run "${gcloud_tpu[@]}" queued-resources delete "$name" "${scope[@]}" --force --quiet
    else
      run "${gcloud_tpu[@]}" tpu-vm delete "$name" "${scope[@]}" --quiet
    fi ;;
  *) die "unknown command '$command': create, setup, train, up, run, stop, ssh, logs or delete" ;;
esac
