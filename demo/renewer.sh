#!/usr/bin/env bash
# Renews the lease of the demo's placement document: ansible/renew.yml against inventory/local, then a pause of
# INTERVAL seconds, until stopped. scripts/demo.sh starts it in the background in its own process group (pid file
# .cache/demo/renewer.pid) and scripts/demo-down.sh stops that group. One line per renewal in .cache/demo/renewer.log,
# the last renewal's whole output in .cache/demo/renew.log.
#
#   demo/renewer.sh INTERVAL
#
# A server trusts the file's copy until the renewal time written in it plus placement_max_staleness_seconds: the
# interval plus the time one renew.yml takes must stay well under that (benchmarks/RESULTS.md has the figures).
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
interval=${1:?usage: demo/renewer.sh INTERVAL}
logs=$repo/.cache/demo
mkdir -p "$logs"
export PATH=$repo/.venv/bin:$PATH
export ANSIBLE_ROLES_PATH=$repo/ansible/roles
export ANSIBLE_FORCE_COLOR=0

while :; do
    start=$(date +%s%3N)
    if ansible-playbook -i "$repo/inventory/local" "$repo/ansible/renew.yml" >"$logs/renew.log" 2>&1; then
        status=renewed
    else
        status="FAILED (see $logs/renew.log)"
    fi
    took=$(($(date +%s%3N) - start))
    printf '%s renew.yml %s in %d.%01d s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$status" $((took / 1000)) \
        $((took % 1000 / 100)) >>"$logs/renewer.log"
    sleep "$interval"
done
