#!/usr/bin/env bash
# A real one-machine Slurm for tests and demos:
#   tools/slurm-up.sh [--nodes N] [--cpus C] [--dir DIR] [--cred-expire S]
# installs Debian's slurm-wlm and munge when missing (as root, through apt), then starts munged,
# slurmctld and N slurmd (node1..nodeN: Debian's slurmd has MULTIPLE_SLURMD, one port each), all on
# 127.0.0.1, all state under DIR (default /tmp/trainscale-slurm). Clients need SLURM_CONF, which
# DIR/env exports:   source DIR/env && sinfo
# --cred-expire: Slurm's AuthInfo cred_expire (default 120, Slurm's own), which is also how long a
# requeued job waits before it may start again (drills recovered by requeue use a short one).
# tools/slurm-down.sh [--dir DIR] stops exactly the daemons this script started.
# Exit codes: 0 up (or already up), 2 cannot (not root, no apt, ...), 1 the daemons did not come up.
set -euo pipefail
NODES=2 CPUS=2 DIR=/tmp/trainscale-slurm CRED_EXPIRE=120
while [ $# -gt 0 ]; do
  case "$1" in
    --nodes) NODES=$2; shift 2 ;;
    --cpus) CPUS=$2; shift 2 ;;
    --dir) DIR=$2; shift 2 ;;
    --cred-expire) CRED_EXPIRE=$2; shift 2 ;;
    *) echo "slurm-up: error: unknown argument '$1' (usage: slurm-up.sh [--nodes N] [--cpus C] [--dir DIR] [--cred-expire S])" >&2; exit 2 ;;
  esac
done
fail() { echo "slurm-up: error: $*" >&2; exit 2; }
[[ "$NODES" =~ ^[1-9][0-9]?$ ]] || fail "--nodes must be 1..99, got '$NODES'"
[[ "$CPUS" =~ ^[1-9][0-9]*$ ]] || fail "--cpus must be a positive integer, got '$CPUS'"
[[ "$CRED_EXPIRE" =~ ^[0-9]+$ && "$CRED_EXPIRE" -ge 5 ]] || fail "--cred-expire must be 5 or more seconds, got '$CRED_EXPIRE'"
[[ "$DIR" = /* && "$DIR" != *[[:space:]]* ]] || fail "--dir must be an absolute path without spaces, got '$DIR'"
[ "$(id -u)" = 0 ] || fail "needs root (it installs packages and runs slurmctld, slurmd and munged)"

HERE=$(cd "$(dirname "$0")" && pwd)
"$HERE/system-deps.sh" slurm

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
if alive "$DIR/run/slurmctld.pid"; then
  echo "slurm-up: already up in $DIR (source $DIR/env)"; exit 0
fi

port_free() { [ -z "$(ss -Htln "sport = :$1")" ]; }
pick_ports() {  # pick_ports COUNT: the first base >= 16800 with COUNT free consecutive ports
  local base=16800 i
  while [ $base -lt 30000 ]; do
    for ((i = 0; i < $1; i++)); do port_free $((base + i)) || break; done
    [ "$i" = "$1" ] && { echo $base; return; }
    base=$((base + $1 + 1))
  done
  fail "no free ports for slurmctld and slurmd"
}
BASE=$(pick_ports $((NODES + 1)))
CTLD_PORT=$BASE
FIRST_SLURMD=$((BASE + 1)) LAST_SLURMD=$((BASE + NODES))

mkdir -p "$DIR"/{etc,state,log,run,munge}
for i in $(seq 1 "$NODES"); do mkdir -p "$DIR/spool/node$i"; done
chmod 755 "$DIR"
chown munge:munge "$DIR/munge"; chmod 755 "$DIR/munge"  # munged: the socket folder must be searchable by all
runuser -u munge -- test -x "$DIR/munge" \
  || fail "$DIR is not reachable by the munge user: every parent folder must be searchable (chmod o+x)"
[ -f "$DIR/munge/munge.key" ] || { dd if=/dev/urandom bs=1 count=1024 of="$DIR/munge/munge.key" status=none
  chown munge:munge "$DIR/munge/munge.key"; chmod 400 "$DIR/munge/munge.key"; }

cat > "$DIR/etc/slurm.conf" <<CONF
ClusterName=trainscale
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$DIR/munge/munge.socket.2,cred_expire=$CRED_EXPIRE
SlurmctldPort=$CTLD_PORT
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd-%n.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/log/jobcomp.txt
KillWait=5
SlurmdTimeout=10
NodeName=node[1-$NODES] NodeHostname=localhost NodeAddr=127.0.0.1 Port=[$FIRST_SLURMD-$LAST_SLURMD] CPUs=$CPUS RealMemory=2000 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
echo "export SLURM_CONF=$DIR/etc/slurm.conf" > "$DIR/env"
export SLURM_CONF=$DIR/etc/slurm.conf

runuser -u munge -- /usr/sbin/munged --socket="$DIR/munge/munge.socket.2" --pid-file="$DIR/munge/munged.pid" \
  --log-file="$DIR/munge/munged.log" --seed-file="$DIR/munge/munged.seed" --key-file="$DIR/munge/munge.key"
/usr/sbin/slurmctld -f "$SLURM_CONF"
for i in $(seq 1 "$NODES"); do /usr/sbin/slurmd -f "$SLURM_CONF" -N "node$i"; done
for _ in $(seq 1 150); do
  idle=$(sinfo -h -N -o '%N %T' 2>/dev/null | sort -u | grep -c ' idle$' || true)
  if [ "$idle" = "$NODES" ]; then
    echo "slurm-up: $NODES node(s) idle; slurmctld on port $CTLD_PORT; state in $DIR (source $DIR/env)"
    exit 0
  fi
  sleep 0.2
done
echo "slurm-up: the nodes did not become idle within 30 s; see $DIR/log" >&2
sinfo -N >&2 || true
exit 1
