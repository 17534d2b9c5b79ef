#!/usr/bin/env bash
# Stops exactly the daemons tools/slurm-up.sh started in DIR (by the PIDs in its pid files, and only
# processes whose command line names DIR), then removes DIR.
#   tools/slurm-down.sh [--dir DIR]
set -euo pipefail
DIR=/tmp/trainscale-slurm
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) DIR=$2; shift 2 ;;
    *) echo "slurm-down: error: unknown argument '$1' (usage: slurm-down.sh [--dir DIR])" >&2; exit 2 ;;
  esac
done
[[ "$DIR" = /* && "$DIR" != *[[:space:]]* ]] || { echo "slurm-down: error: --dir must be an absolute path, got '$DIR'" >&2; exit 2; }
[ -d "$DIR" ] || { echo "slurm-down: nothing in $DIR"; exit 0; }

ours() {  # ours PID: a live process started with our DIR on its command line
  [ -r "/proc/$1/cmdline" ] && tr '\0' ' ' < "/proc/$1/cmdline" | grep -qF -- "$DIR/"
}
pids=""
for f in "$DIR"/run/slurmd-*.pid "$DIR"/run/slurmctld.pid "$DIR"/munge/munged.pid; do
  [ -f "$f" ] || continue
  p=$(cat "$f")
  if [[ "$p" =~ ^[0-9]+$ ]] && ours "$p"; then kill "$p" && pids="$pids $p"; fi
done
for p in $pids; do
  for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$p" 2>/dev/null && ours "$p"; then kill -9 "$p"; fi
done
rm -rf "$DIR"
echo "slurm-down: stopped${pids:- nothing}; removed $DIR"
