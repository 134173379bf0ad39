#!/usr/bin/env bash
# Gives this machine the Podman settings the project's `podman` role manages on servers (OCI runtime, default
# ulimits), and serves the Docker-compatible API on /run/podman/podman.sock. On a host with systemd the role
# enables podman.socket; on a host without it (CI machines, containers) this starts `podman system service`.
# Settings come from the environment, with the role's defaults:
#   PODMAN_RUNTIME (runc)   PODMAN_ULIMITS ("nofile=20000:20000" "nproc=32768:32768")
set -euo pipefail

runtime=${PODMAN_RUNTIME:-runc}
read -r -a ulimits <<< "${PODMAN_ULIMITS:-nofile=20000:20000 nproc=32768:32768}"
socket=/run/podman/podman.sock
conf=/etc/containers/containers.conf

want=$(
    printf '# Managed by airflow-placement scripts/host-podman.sh\n[containers]\ndefault_ulimits = ['
    sep=""; for u in "${ulimits[@]}"; do printf '%s"%s"' "$sep" "$u"; sep=", "; done
    printf ']\n\n[engine]\nruntime = "%s"\n' "$runtime"
)
if [ "$(cat "$conf" 2>/dev/null)" != "$want" ]; then
    mkdir -p "$(dirname "$conf")"
    printf '%s\n' "$want" > "$conf"
    echo "wrote $conf"
fi

# Docker API clients (docker-py, the DockerOperator) look for /var/run/docker.sock, as they do inside the
# Airflow containers where the Podman socket is mounted there. Debian's podman-docker package does the same.
link_docker_socket() {
    if [ ! -e /run/docker.sock ] && [ ! -L /run/docker.sock ]; then ln -s "$socket" /run/docker.sock; fi
}

answers() { curl -fsS --max-time 3 --unix-socket "$socket" http://d/_ping >/dev/null 2>&1; }
if answers; then
    link_docker_socket
    echo "ok: Podman API answers on $socket"
    exit 0
fi
if [ "$(ps -o comm= -p 1 2>/dev/null)" = systemd ]; then
    systemctl enable --now podman.socket
else
    mkdir -p "$(dirname "$socket")"
    nohup podman system service --time=0 "unix://$socket" >/var/log/podman-api.log 2>&1 &
fi
for _ in $(seq 50); do answers && { link_docker_socket; echo "ok: Podman API answers on $socket"; exit 0; }; sleep 0.2; done
echo "host-podman: the Podman API did not answer on $socket (see /var/log/podman-api.log)" >&2
exit 1
