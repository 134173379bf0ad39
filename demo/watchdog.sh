#!/usr/bin/env bash
# Runs the watchdog of the watchdog demo (scripts/demo.sh --watchdog): airflow-placement watch with the configuration
# ansible/watchdog.yml wrote (placement_watchdog_service: false: no systemd unit on this machine) and its secrets
# (watch.env: the publisher's token, the admin password for re-runs), started again 5 s after it stops. scripts/demo.sh
# starts it in the background in its own process group (pid file .cache/demo/watchdog.pid) and scripts/demo-down.sh
# stops that group. Every line it says (one per action), prefixed with the UTC time, in .cache/demo/watchdog.log.
#
#   demo/watchdog.sh CONFIG
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
config=${1:?usage: demo/watchdog.sh CONFIG}
logs=$repo/.cache/demo
mkdir -p "$logs"
set -a
# shellcheck source=/dev/null
. "$(dirname "$config")/watch.env"
set +a
export PYTHONUNBUFFERED=1

stamp() {  # each line prefixed with the UTC time
    local line
    while IFS= read -r line; do
        printf '%s %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$line"
    done
}

while :; do
    "$repo/.venv/bin/airflow-placement" watch --config "$config" 2>&1 | stamp >>"$logs/watchdog.log"
    printf '%s demo/watchdog.sh: airflow-placement watch stopped; started again in 5 s\n' \
        "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >>"$logs/watchdog.log"
    sleep 5
done
