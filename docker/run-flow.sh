#!/usr/bin/env bash
# run-flow FLOW [bytewax.run options...]: run dataflows.FLOW:flow in a container.
# - creates the flow's recovery stores on first start (MD_RECOVERY_DIR/FLOW, RECOVERY_PARTITIONS
#   files: fixed for the life of the stores, so well above any worker count) and passes -r;
# - copies stdout/stderr to MD_LOG_DIR/FLOW.log, where `marketdata doctor` looks for errors;
# - execs Bytewax, so signals (docker stop sends SIGINT, see compose.yaml) reach it directly.
set -euo pipefail
flow="${1:?usage: run-flow FLOW [bytewax.run options]}"
shift
if [[ -n "${MD_LOG_DIR:-}" ]]; then
  mkdir -p "$MD_LOG_DIR"
  exec > >(tee -a "$MD_LOG_DIR/$flow.log") 2>&1
fi
args=()
if [[ -n "${MD_RECOVERY_DIR:-}" ]]; then
  dir="$MD_RECOVERY_DIR/$flow"
  mkdir -p "$dir"
  if ! compgen -G "$dir/part-*.sqlite3" >/dev/null; then
    python -m bytewax.recovery "$dir" "${RECOVERY_PARTITIONS:-16}"
  fi
  args=(-r "$dir")
fi
exec python -m bytewax.run "dataflows.${flow}:flow" "${args[@]}" "$@"
