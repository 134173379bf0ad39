#!/usr/bin/env bash
# Builds the airflow-placement container images without any container registry: Debian bases from the Debian
# mirror (debootstrap), Airflow from a wheelhouse made on this machine, Postgres and Redis from Debian packages.
# Rebuilds an image only when its inputs change, and writes a `podman save` archive of each image to
# $AIRFLOW_PLACEMENT_CACHE/images/ for loading into servers that have no registry either.
#
#   images/build.sh              build (or reuse) every image
#   images/build.sh NAME...      only these images and what they are built on (NAME as printed by --list)
#   images/build.sh --list       print the image names, one a line
#
# Environment: AIRFLOW_PLACEMENT_CACHE (/var/cache/airflow-placement), AIRFLOW_PLACEMENT_DEBIAN_MIRROR
# (http://deb.debian.org/debian), PIP (the repository's .venv/bin/pip), FORCE=1 to rebuild regardless of inputs.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")

cache=${AIRFLOW_PLACEMENT_CACHE:-/var/cache/airflow-placement}
mirror=${AIRFLOW_PLACEMENT_DEBIAN_MIRROR:-http://deb.debian.org/debian}
pip=${PIP:-$repo/.venv/bin/pip}
force=${FORCE:-0}
prefix=localhost/airflow-placement
label=org.airflow-placement.inputs

airflow_version=3.3.2
airflow_requirements=("apache-airflow[postgres,celery,redis]==$airflow_version" "apache-airflow-providers-docker==4.6.1"
    "apache-airflow-providers-fab==3.10.2" psycopg2-binary)
# pip on this machine resolves environment markers for its own Python (3.11.7); the image's is 3.11.2, where
# redis also needs async-timeout.
wheelhouse_extras=(async-timeout)

# Image name -> what it is built from. Order matters: bases before what is built on them.
images=(
    debian:12 debian:13
    debian-systemd:12 debian-systemd:13
    airflow:$airflow_version postgres:15 redis:7
    busybox:latest
)

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*"; }
die() { echo "build.sh: $*" >&2; exit 1; }

# The hash of everything an image is made from, stored as a label to decide whether to rebuild.
inputs_hash() { sha256sum | cut -c1-16; }
context_hash() { (cd "$1" && find . -type f -print0 | sort -z | xargs -0 sha256sum); }
image_id() { podman image inspect --format '{{.Id}}' "$1" 2>/dev/null || true; }
current_label() { podman image inspect --format "{{ index .Labels \"$label\" }}" "$1" 2>/dev/null || true; }
up_to_date() { [ "$force" != 1 ] && [ "$(current_label "$1")" = "$2" ]; }

suite_of() { case "$1" in 12) echo bookworm ;; 13) echo trixie ;; *) die "no Debian suite for release '$1'" ;; esac; }

build_debian() {  # debian:12|13: debootstrap minbase, cached as a tree
    local release=$1 suite; suite=$(suite_of "$1")
    local name=$prefix/debian:$release
    local hash; hash=$(printf 'debootstrap minbase %s %s v1' "$suite" "$mirror" | inputs_hash)
    if up_to_date "$name" "$hash"; then log "$name is up to date"; return; fi
    local tree=$cache/debootstrap/$suite
    if [ "$(cat "$tree.inputs" 2>/dev/null)" != "$hash" ]; then
        log "debootstrap $suite into $tree"
        rm -rf "$tree" "$tree.inputs"
        mkdir -p "$tree"
        debootstrap --variant=minbase "$suite" "$tree" "$mirror" > "$tree.log" 2>&1 \
            || die "debootstrap $suite failed, see $tree.log"
        rm -rf "$tree"/var/cache/apt/archives/*.deb "$tree"/var/lib/apt/lists/*
        echo "$hash" > "$tree.inputs"
    fi
    log "import $name"
    tar -C "$tree" -c . | podman import --quiet --change "LABEL $label=$hash" --change 'CMD ["/bin/bash"]' - "$name" >/dev/null
}

build_containerfile() {  # NAME:TAG from images/NAME/Containerfile on top of BASE
    local name=$prefix/$1 dir=$here/$2 base=$prefix/$3 buildlog=$cache/logs/${1/:/-}.log; shift 3
    local hash; hash=$({ context_hash "$dir"; image_id "$base"; printf '%s\n' "$@"; } | inputs_hash)
    if up_to_date "$name" "$hash"; then log "$name is up to date"; return; fi
    log "build $name (log: $buildlog)"
    mkdir -p "$cache/logs"
    podman build --pull=never --build-arg "BASE=$base" --label "$label=$hash" "$@" -t "$name" "$dir" >"$buildlog" 2>&1 \
        || { tail -n 30 "$buildlog" >&2; die "building $name failed, see $buildlog"; }
}

wheelhouse() {  # prints the wheelhouse directory for the Airflow requirements, making it if needed
    local hash; hash=$({ printf '%s\n' "${airflow_requirements[@]}" "${wheelhouse_extras[@]}"; cat "$repo/constraints.txt"; } | inputs_hash)
    local dir=$cache/wheelhouse/$hash
    if [ ! -f "$dir/.complete" ]; then
        log "pip wheel ${airflow_requirements[*]} into $dir" >&2
        rm -rf "$dir"; mkdir -p "$dir"
        mkdir -p "$cache/logs"
        "$pip" wheel --wheel-dir "$dir" --constraint "$repo/constraints.txt" "${airflow_requirements[@]}" \
            "${wheelhouse_extras[@]}" >"$cache/logs/wheelhouse.log" 2>&1 || { tail -n 30 "$cache/logs/wheelhouse.log" >&2; die "pip wheel failed"; }
        # Every wheel of the image at a version constraints.txt pins: nothing resolved afresh on the next build.
        local unpinned; unpinned=$(python3 - "$dir" "$repo/constraints.txt" <<'PY'
import pathlib, re, sys
def name(text): return re.sub(r"[-_.]+", "-", text).lower()
lines = pathlib.Path(sys.argv[2]).read_text().splitlines()
pinned = {name(line.split("==")[0]) for line in lines if "==" in line and not line.startswith("#")}
print(" ".join(sorted({name(w.name.split("-")[0]) for w in pathlib.Path(sys.argv[1]).glob("*.whl")} - pinned)))
PY
)
        [ -z "$unpinned" ] || die "constraints.txt pins no version of what the Airflow image needs: $unpinned"
        touch "$dir/.complete"
    fi
    echo "$dir"
}

build_busybox() {  # busybox:latest from this machine's static busybox (busybox-static), for smoke tests
    local name=$prefix/busybox:latest bin=/bin/busybox
    local hash; hash=$(sha256sum "$bin" | inputs_hash)
    if up_to_date "$name" "$hash"; then log "$name is up to date"; return; fi
    log "import $name"
    local tree; tree=$(mktemp -d)
    mkdir -p "$tree/bin" "$tree/tmp"
    cp "$bin" "$tree/bin/busybox"
    for applet in $("$bin" --list); do [ "$applet" = busybox ] || ln -s busybox "$tree/bin/$applet"; done
    tar -C "$tree" -c . | podman import --quiet --change "LABEL $label=$hash" --change 'CMD ["/bin/sh"]' \
        --change 'ENV PATH=/bin' - "$name" >/dev/null
    rm -rf "$tree"
}

build_one() {
    case "$1" in
        debian:12|debian:13) build_debian "${1#debian:}" ;;
        debian-systemd:12|debian-systemd:13) build_containerfile "$1" debian-systemd "debian:${1#*:}" ;;
        airflow:*) build_containerfile "$1" airflow debian:12 --volume "$(wheelhouse):/wheelhouse:ro" \
            --build-arg "AIRFLOW_REQUIREMENTS=${airflow_requirements[*]}" ;;
        postgres:15) build_containerfile "$1" postgres debian:12 ;;
        redis:7) build_containerfile "$1" redis debian:12 ;;
        busybox:latest) build_busybox ;;
        *) die "unknown image '$1' (see --list)" ;;
    esac
}

base_of() {
    case "$1" in
        debian-systemd:*) echo "debian:${1#*:}" ;;
        airflow:*|postgres:*|redis:*) echo debian:12 ;;
    esac
}

save_archive() {  # images/<name>-<tag>.tar, rewritten when the image changes
    local name=$prefix/$1 short=${1/:/-}
    local tar=$cache/images/$short.tar id; id=$(image_id "$name")
    if [ -f "$tar" ] && [ "$(cat "$tar.id" 2>/dev/null)" = "$id" ]; then return; fi
    log "save $tar"
    mkdir -p "$cache/images"
    rm -f "$tar" "$tar.id"
    podman save --quiet -o "$tar.partial" "$name" && mv "$tar.partial" "$tar"
    echo "$id" > "$tar.id"
}

if [ "${1:-}" = --list ]; then printf '%s\n' "${images[@]}"; exit 0; fi
command -v podman >/dev/null || die "podman is not installed"

wanted=("$@")
[ "${#wanted[@]}" -gt 0 ] || wanted=("${images[@]}")
selected=()
for w in "${wanted[@]}"; do
    w=${w#"$prefix/"}
    printf '%s\n' "${images[@]}" | grep -qxF "$w" || die "unknown image '$w' (see --list)"
    b=$(base_of "$w")
    [ -z "$b" ] || selected+=("$b")
    selected+=("$w")
done

start=$SECONDS
timings=()
for image in "${images[@]}"; do
    printf '%s\n' "${selected[@]}" | grep -qxF "$image" || continue
    t=$SECONDS
    build_one "$image"
    save_archive "$image"
    timings+=("$(printf '  %-46s %4ss' "$prefix/$image" $((SECONDS - t)))")
done
log "done in $((SECONDS - start))s; archives in $cache/images"
printf '%s\n' "${timings[@]}"
