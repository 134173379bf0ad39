#!/usr/bin/env bash
# Runs the Molecule scenarios of the Ansible roles against systemd server containers built by images/build.sh,
# with the shared base config ansible/molecule/config.yml.
#
#   scripts/molecule.sh all                                   every scenario of every role (ansible/roles/*/molecule/*),
#                                                             both platforms; continues past failures
#   scripts/molecule.sh ROLE [SCENARIO] [--platform debian12|debian13] [-- MOLECULE_TEST_ARGS...]
#                                                             one role (scenario default), one or both platforms
#
# Builds or reuses the images first (SKIP_IMAGES=1 skips that). `all` also runs the checks of the test bed itself
# first (tests/ansible/test_argument_specs.py: specs agree with defaults; tests/molecule: a role that is not idempotent fails).
# Prints per-scenario timings at the end and exits non-zero if anything failed. Logs: .cache/molecule/.
# MOLECULE_ROLES_DIR points at another roles folder (the test fixtures use it).
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
roles=${MOLECULE_ROLES_DIR:-$repo/ansible/roles}
roles=$(cd "$roles" && pwd)
export PATH=$repo/.venv/bin:$PATH
# Read by ansible/molecule/config.yml.
export AIRFLOW_PLACEMENT_MOLECULE_DIR=$repo/ansible/molecule
export ANSIBLE_ROLES_PATH=$roles:$repo/ansible/roles
export ANSIBLE_FORCE_COLOR=${ANSIBLE_FORCE_COLOR:-0}
export PY_COLORS=${PY_COLORS:-0}
base_config=$repo/ansible/molecule/config.yml
logs=$repo/.cache/molecule

usage() { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

platform=""
positional=()
extra=()
while [ "$#" -gt 0 ]; do
    case "$1" in
        --platform) platform=${2:-}; shift 2 || usage ;;
        --platform=*) platform=${1#*=}; shift ;;
        --) shift; extra=("$@"); break ;;
        -h|--help) usage ;;
        *) positional+=("$1"); shift ;;
    esac
done
[ "${#positional[@]}" -ge 1 ] || usage
case "$platform" in ""|debian12|debian13) ;; *) echo "molecule.sh: --platform is debian12 or debian13" >&2; exit 2 ;; esac

scenarios=()  # role/scenario
if [ "${positional[0]}" = all ]; then
    for dir in "$roles"/*/molecule/*/; do
        [ -f "$dir/molecule.yml" ] || continue
        role=$(basename "$(dirname "$(dirname "$dir")")")
        scenarios+=("$role/$(basename "$dir")")
    done
else
    role=${positional[0]} scenario=${positional[1]:-default}
    [ -f "$roles/$role/molecule/$scenario/molecule.yml" ] \
        || { echo "molecule.sh: no scenario $roles/$role/molecule/$scenario/molecule.yml" >&2; exit 2; }
    scenarios=("$role/$scenario")
fi
[ "${#scenarios[@]}" -gt 0 ] || { echo "molecule.sh: no scenarios under $roles/*/molecule/"; exit 0; }

if [ "${SKIP_IMAGES:-0}" != 1 ]; then
    "$repo/images/build.sh" || { echo "molecule.sh: building the images failed" >&2; exit 1; }
fi

mkdir -p "$logs"
summary=()
failed=0
start=$SECONDS
if [ "${positional[0]}" = all ]; then
    printf '\n======== test bed checks: pytest tests/ansible tests/molecule ========\n'
    t=$SECONDS
    if (cd "$repo" && pytest -q tests/ansible/test_argument_specs.py tests/molecule); then status=ok; else status=FAILED; failed=1; fi
    summary+=("$(printf '%-40s %-7s %5ss' "test bed checks" "$status" $((SECONDS - t)))")
fi
for item in "${scenarios[@]}"; do
    role=${item%/*} scenario=${item#*/}
    prefix="molecule-$role-$scenario"
    args=(--scenario-name "$scenario")
    [ -z "$platform" ] || args+=(--platform-name "$prefix-$platform")
    log=$logs/$role-$scenario.log
    printf '\n======== molecule %s %s%s (log: %s) ========\n' "$role" "$scenario" "${platform:+ on $platform}" "$log"
    t=$SECONDS
    if (cd "$roles/$role" && MOLECULE_INSTANCE_PREFIX=$prefix \
            molecule --base-config "$base_config" test "${args[@]}" "${extra[@]}") 2>&1 | tee "$log"; then
        status=ok
    else
        status=FAILED; failed=1
    fi
    summary+=("$(printf '%-40s %-7s %5ss' "$role/$scenario${platform:+ ($platform)}" "$status" $((SECONDS - t)))")
done

printf '\n======== molecule timing ========\n'
printf '%s\n' "${summary[@]}"
printf '%-40s %-7s %5ss\n' total "$([ "$failed" = 0 ] && echo ok || echo FAILED)" $((SECONDS - start))
exit "$failed"
