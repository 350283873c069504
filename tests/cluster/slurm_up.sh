#!/usr/bin/env bash
# A one-node SLURM cluster on this host for the tests: munged, slurmctld and slurmd with
# tests/cluster/slurm.conf (no cgroups, no accounting database), node `localhost`, 2 CPUs.
#
#   tests/cluster/slurm_up.sh          # install (apt-get) if missing, start, wait until idle
#   tests/cluster/slurm_up.sh stop     # stop the three daemons
#
# Idempotent: a rerun with everything up only checks that the node answers. Needs root
# (or sudo) for apt-get, /etc/slurm and the daemons. Logs: /var/log/slurm/.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
CONF=/etc/slurm/slurm.conf
NODE=localhost
WAIT_S=${SLURM_UP_WAIT_S:-60}
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
export PATH="$PATH:/usr/sbin:/sbin"

say() { echo "slurm_up: $*" >&2; }

alive() {  # alive PIDFILE: the process named in PIDFILE exists
    [ -s "$1" ] && $SUDO kill -0 "$($SUDO cat "$1")" 2>/dev/null
}

stop_daemon() {  # stop_daemon NAME PIDFILE
    if alive "$2"; then
        local pid; pid="$($SUDO cat "$2")"
        $SUDO kill "$pid"
        for _ in $(seq 300); do $SUDO kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if $SUDO kill -0 "$pid" 2>/dev/null; then
            say "$1 (pid $pid) still running 30 s after SIGTERM"; exit 1
        fi
        say "stopped $1 (pid $pid)"
    fi
}

if [ "${1:-}" = stop ]; then
    stop_daemon slurmd /run/slurmd.pid
    stop_daemon slurmctld /run/slurmctld.pid
    stop_daemon munged /run/munge/munged.pid
    exit 0
fi
[ $# -eq 0 ] || { say "usage: $0 [stop]"; exit 2; }

# 1. Packages.
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
    say "installing slurm-wlm and munge with apt-get"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq slurm-wlm munge >/dev/null
fi

# 2. Config: the repo's copy, installed where every SLURM command looks for it.
if ! cmp -s "$HERE/slurm.conf" "$CONF"; then
    $SUDO mkdir -p "$(dirname "$CONF")"
    $SUDO cp "$HERE/slurm.conf" "$CONF"
    if alive /run/slurmctld.pid; then  # running with another config: restart with ours
        stop_daemon slurmd /run/slurmd.pid
        stop_daemon slurmctld /run/slurmctld.pid
    fi
fi
$SUDO mkdir -p /var/log/slurm /var/lib/slurm/slurmctld /var/lib/slurm/slurmd /run/munge /var/log/munge /var/lib/munge
$SUDO chown munge:munge /run/munge /var/log/munge /var/lib/munge

# 3. munged (as the munge user, with a key made on first use).
if [ ! -s /etc/munge/munge.key ]; then
    $SUDO mkdir -p /etc/munge
    $SUDO dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
    $SUDO chown munge:munge /etc/munge/munge.key
    $SUDO chmod 400 /etc/munge/munge.key
fi
if ! alive /run/munge/munged.pid; then
    $SUDO runuser -u munge -- munged
    say "started munged"
fi

# 4. slurmctld, then slurmd under the node name the config uses.
if ! alive /run/slurmctld.pid; then
    $SUDO slurmctld
    say "started slurmctld"
fi
if ! alive /run/slurmd.pid; then
    $SUDO slurmd -N "$NODE"
    say "started slurmd"
fi

# 5. Wait until the node takes jobs (a node left down or drained by an earlier run is resumed).
deadline=$((SECONDS + WAIT_S))
while :; do
    state="$(sinfo -h -n "$NODE" -o %T 2>/dev/null || true)"
    case "$state" in
        idle|mixed|allocated|completing) break ;;
        down*|drain*|fail*) $SUDO scontrol update nodename="$NODE" state=resume 2>/dev/null || true ;;
    esac
    if [ $SECONDS -ge $deadline ]; then
        say "node $NODE not ready after ${WAIT_S}s (state: '${state:-no answer}'); logs:"
        for f in /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log; do
            echo "== $f" >&2; $SUDO tail -n 20 "$f" >&2 || true
        done
        exit 1
    fi
    sleep 0.5
done
say "node $NODE is $state"
