#!/usr/bin/env bash
# Removes everything scripts/demo.sh (with or without --watchdog) created: the renewer of the placement document's
# lease (demo/renewer.sh, the process group in .cache/demo/renewer.pid) or the watchdog (demo/watchdog.sh,
# .cache/demo/watchdog.pid, its configuration and state in .cache/demo/watchdog/), the server (and publisher) containers and the work database (with everything running
# inside them; they carry the label org.airflow-placement.demo), their volumes (named airflow-placement-demo-*),
# the demo network (airflow-placement-demo), and the demo's generated state in inventory/local (passwords, the
# rendered placement documents, the publisher's state, recorded failovers), and the same in inventory/local-watchdog.
# Images and their archives stay, for the next run. Safe to run when nothing is there.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
label=org.airflow-placement.demo
network=airflow-placement-demo
inventory=$repo/inventory/local

if [ "$(id -u)" -ne 0 ]; then
    echo "demo-down: run as root (the demo's containers are root's)" >&2
    exit 1
fi

start=$SECONDS
pidfile=$repo/.cache/demo/renewer.pid
if pid=$(cat "$pidfile" 2>/dev/null) && ps -o args= -p "$pid" 2>/dev/null | grep -q 'demo/renewer.sh'; then
    echo "stopping the renewer: process group $pid"
    # demo.sh started it with setsid: it leads its own process group (the loop and its ansible-playbook).
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
fi
rm -f "$pidfile"
pidfile=$repo/.cache/demo/watchdog.pid
if pid=$(cat "$pidfile" 2>/dev/null) && ps -o args= -p "$pid" 2>/dev/null | grep -q 'demo/watchdog.sh'; then
    echo "stopping the watchdog: process group $pid"
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
fi
rm -f "$pidfile"
rm -rf "$repo/.cache/demo/watchdog"
"$repo/demo/remove-machines.sh" "$label" "$network"
for inventory in "$inventory" "$repo/inventory/local-watchdog"; do
    rm -rf "$inventory/.secrets" "$inventory/.rendered" "$inventory/.placement" "$inventory/group_vars/all/dag_placement_moves.yml"
done
echo "demo removed in $((SECONDS - start))s"
