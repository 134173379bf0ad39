#!/usr/bin/env bash
# Removes what demo/servers.yml made for one inventory: the containers carrying LABEL (with everything running
# inside them), the volumes named NETWORK-*, and the network NETWORK. Used by scripts/demo-down.sh (the local demo)
# and tests/example/down.sh (the example inventory's test bed). Safe to run when nothing is there.
#
#   demo/remove-machines.sh LABEL NETWORK
set -euo pipefail
if [ "$#" -ne 2 ]; then
    echo "usage: demo/remove-machines.sh LABEL NETWORK" >&2
    exit 2
fi
label=$1 network=$2
mapfile -t containers < <(podman ps --all --filter "label=$label" --format '{{.Names}}')
if [ "${#containers[@]}" -gt 0 ]; then
    echo "removing containers: ${containers[*]}"
    podman rm --force --time 0 "${containers[@]}" >/dev/null
fi
mapfile -t volumes < <(podman volume ls --format '{{.Name}}' | grep -E "^$network-" || true)
if [ "${#volumes[@]}" -gt 0 ]; then
    echo "removing volumes: ${volumes[*]}"
    podman volume rm --force "${volumes[@]}" >/dev/null
fi
if podman network exists "$network"; then
    echo "removing network: $network"
    podman network rm "$network" >/dev/null
fi
