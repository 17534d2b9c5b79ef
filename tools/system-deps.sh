#!/usr/bin/env bash
# System packages the launchers' tests use, installed from Debian's archive when missing:
#   tools/system-deps.sh slurm     slurm-wlm and munge (a real Slurm: tools/slurm-up.sh)
#   tools/system-deps.sh netns     iproute2 and util-linux (emulated nodes: trainscale cluster up)
#   tools/system-deps.sh browser   chromium (headless: the HTML report's screenshot and its test)
#   tools/system-deps.sh all       all three
#   tools/system-deps.sh --check   all three, only when running as root with apt (used by make install-test)
# apt never starts daemons here; tools/slurm-up.sh does.
set -euo pipefail
WHAT=${1:-all}
fail() { echo "system-deps: error: $*" >&2; exit 2; }
if [ "$WHAT" = --check ]; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "system-deps: not root or no apt: skipping Slurm/netns/browser packages (their tests will say so)"; exit 0
  fi
  WHAT=all
fi
need=()
case "$WHAT" in
  slurm) want=(slurmctld:slurm-wlm slurmd:slurm-wlm sbatch:slurm-client munged:munge) ;;
  netns) want=(ip:iproute2 tc:iproute2 nsenter:util-linux unshare:util-linux) ;;
  browser) want=(chromium:chromium) ;;
  all) want=(slurmctld:slurm-wlm slurmd:slurm-wlm sbatch:slurm-client munged:munge ip:iproute2 tc:iproute2
             nsenter:util-linux unshare:util-linux chromium:chromium) ;;
  *) fail "unknown set '$WHAT' (slurm, netns, browser, all or --check)" ;;
esac
for pair in "${want[@]}"; do
  cmd=${pair%%:*} pkg=${pair#*:}
  command -v "$cmd" >/dev/null || [ -x "/usr/sbin/$cmd" ] || need+=("$pkg")
done
[ ${#need[@]} -eq 0 ] && exit 0
mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
[ "$(id -u)" = 0 ] || fail "missing ${need[*]}; installing them needs root (apt-get install ${need[*]})"
command -v apt-get >/dev/null || fail "missing ${need[*]} and no apt-get to install them"
echo "system-deps: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null 2>&1 \
  || { apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; } \
  || fail "apt-get install ${need[*]} failed"
