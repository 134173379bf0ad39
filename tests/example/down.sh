#!/usr/bin/env bash
# Removes the example inventory's test bed (tests/example): the three server containers and the work database
# demo/servers.yml made for it (label org.airflow-placement.example-bed), their volumes (airflow-placement-example-*),
# its network (airflow-placement-example) and its files (.cache/example: the inventory's copy and its secrets, the
# bare repository, the forge stand-in's certificate, the logs). The local demo's containers have another label and
# stay. Safe to run when nothing is there.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
label=org.airflow-placement.example-bed
network=airflow-placement-example

start=$SECONDS
"$repo/demo/remove-machines.sh" "$label" "$network"
rm -rf "$repo/.cache/example"
echo "example test bed removed in $((SECONDS - start))s"
