#!/usr/bin/env bash
# Sets up a fresh Debian 12/13 machine for airflow-placement development, tests and the demo: the host packages
# the tools need (debootstrap, the system Python's apt bindings, chromium for the browser test, ...), the Python
# virtual environment at .venv with pinned versions, then Podman the way the servers get it: the project's podman
# role applied to this machine (scripts/host-podman.yml: packages, containers.conf, the compose tool, the API on
# /run/podman/podman.sock and /run/docker.sock). Safe to run again: a second run changes nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
    echo "bootstrap: run as root (it installs Debian packages and starts the Podman API socket)" >&2
    exit 1
fi

step "Debian packages"
packages=(python3-venv python3-apt debootstrap busybox-static git make curl chromium chromium-driver)
missing=()
for p in "${packages[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p"); done
if [ "${#missing[@]}" -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
echo "ok: ${packages[*]}"

step "Python virtual environment (.venv)"
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then "$python" -m venv .venv; fi
.venv/bin/pip install -q --upgrade pip==26.3
stamp=.venv/.requirements.sha256
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    .venv/bin/pip install -q -c constraints.txt -e '.[dev]'
    echo "$want" > "$stamp"
fi
# The editable install leaves a second copy of the package's metadata next to its code, which is on sys.path: Airflow
# would then load the package's plugin twice and report the second as an import error.
rm -rf operator/src/airflow_placement.egg-info
.venv/bin/airflow-placement --version

step "Podman on this machine: the podman role (scripts/host-podman.yml)"
ANSIBLE_DISPLAY_SKIPPED_HOSTS=false ANSIBLE_DISPLAY_OK_HOSTS=false \
    .venv/bin/ansible-playbook -i localhost, -c local scripts/host-podman.yml
