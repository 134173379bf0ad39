"""Every role's meta/argument_specs.yml, defaults/main.yml, README and all-options Molecule scenario agree: the same
variables, each specified with a description, defaulted in defaults/main.yml only, of the declared type and within the
declared choices, named after the role, secrets never logged; the README's variables table lists each variable once
with its default; the all-options scenario sets each one. Every check is one function over a role's folder, run for
every role, and shown to fail for a role with a made-up variable."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

ROLES = Path(__file__).resolve().parents[2] / "ansible" / "roles"
ROLE_DIRS = sorted(p for p in ROLES.iterdir() if (p / "tasks").is_dir()) if ROLES.is_dir() else []

TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "path": (str,),
    "raw": (object,),
    "bool": (bool,),
    "int": (int,),
    "float": (float, int),
    "list": (list,),
    "dict": (dict,),
}
SECRET_ENDINGS = ("_password", "_secret", "_secret_key", "_fernet_key", "_token")


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text()) if path.is_file() else None


def options(role: Path) -> dict[str, dict[str, Any]]:
    specs = load(role / "meta" / "argument_specs.yml") or {}
    return specs.get("argument_specs", {}).get("main", {}).get("options") or {}


def defaults(role: Path) -> dict[str, Any]:
    return load(role / "defaults" / "main.yml") or {}


def _templated(value: Any) -> bool:
    return isinstance(value, str) and "{{" in value


def spec_and_defaults_agree(role: Path) -> list[str]:
    specified, defaulted = options(role), defaults(role)
    problems = [
        f"{n}: in defaults/main.yml but not in meta/argument_specs.yml" for n in sorted({*defaulted} - {*specified})
    ]
    for name, spec in specified.items():
        if name not in defaulted and not spec.get("required"):
            problems.append(f"{name}: optional in the spec but without a default in defaults/main.yml")
        if spec.get("required") and name in defaulted:
            problems.append(f"{name}: required in the spec, yet defaulted")
        if not spec.get("description"):
            problems.append(f"{name}: no description in the spec")
    return problems


def _spec_defaults(spec: dict[str, Any], where: str) -> list[str]:
    found = [where] if "default" in spec else []
    for name, sub in (spec.get("options") or {}).items():
        found += _spec_defaults(sub, f"{where}.{name}")
    return found


def defaults_live_only_in_defaults_main(role: Path) -> list[str]:
    return [
        f"{where}: `default:` in meta/argument_specs.yml (use defaults/main.yml)"
        for name, spec in options(role).items()
        for where in _spec_defaults(spec, name)
    ]


def defaults_have_the_declared_type_and_choice(role: Path) -> list[str]:
    specified = options(role)
    problems = []
    for name, value in defaults(role).items():
        spec = specified.get(name, {})
        kind = spec.get("type", "str")
        if _templated(value):
            continue  # a template: its type is only known when Ansible renders it
        if not isinstance(value, TYPES.get(kind, (object,))) or (kind in ("int", "float") and isinstance(value, bool)):
            problems.append(f"{name}={value!r} is not of type {kind}")
        elif isinstance(value, list) and "elements" in spec:
            wrong = [v for v in value if not isinstance(v, TYPES.get(spec["elements"], (object,)))]
            if wrong:
                problems.append(f"{name} has elements that are not {spec['elements']}: {wrong!r}")
        if "choices" in spec and value not in spec["choices"]:
            problems.append(f"{name}={value!r} is not one of {spec['choices']}")
    return problems


def variables_are_named_after_the_role(role: Path) -> list[str]:
    prefix = f"{role.name}_"
    return [
        f"{n}: not named {prefix}..." for n in sorted({*options(role), *defaults(role)}) if not n.startswith(prefix)
    ]


def secrets_are_never_logged_and_have_no_fixed_default(role: Path) -> list[str]:
    defaulted = defaults(role)
    secrets = [name for name in options(role) if name.endswith(SECRET_ENDINGS)]
    return [
        f"{name}: a secret without no_log: true in the spec"
        for name in secrets
        if options(role)[name].get("no_log") is not True
    ] + [
        f"{name}: a secret with a fixed default (generate it, or leave it empty)"
        for name in secrets
        if defaulted.get(name) and not _templated(defaulted[name])
    ]


def readme_rows(role: Path) -> dict[str, list[tuple[str, str]]]:
    """The variables table of the README: variable -> [(default, meaning)] for each row naming it. A row may name
    several variables: the first in full, the others by an ending only one of the role's variables has
    (`` `dag_placement_http_bind` / `_port` ``), and their defaults in the same way (`` `0.0.0.0` / `8765` ``)."""
    known = {*options(role), *defaults(role)}
    rows: dict[str, list[tuple[str, str]]] = {}
    for line in (role / "README.md").read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
        if not line.startswith("| `") or len(cells) != 3:
            continue
        names = [part.strip().strip("`") for part in cells[0].split(" / ")]
        names[1:] = [
            next(iter(matches)) if len(matches := {k for k in known if k.endswith(short)}) == 1 else short
            for short in names[1:]
        ]
        defaults_ = cells[1].split(" / ") if len(cells[1].split(" / ")) == len(names) else [cells[1]] * len(names)
        for name, default in zip(names, defaults_, strict=True):
            rows.setdefault(name, []).append((default, cells[2]))
    return rows


def the_readme_lists_each_variable_once_with_its_default(role: Path) -> list[str]:
    specified, defaulted, rows = options(role), defaults(role), readme_rows(role)
    problems = [f"{n}: not in the README's variables table" for n in sorted({*specified} - {*rows})]
    problems += [
        f"{n}: in the README's variables table, but not a variable of the role" for n in sorted({*rows} - {*specified})
    ]
    for name, found in rows.items():
        if len(found) > 1:
            problems.append(f"{name}: {len(found)} rows in the README")
        default, meaning = found[0]
        if not meaning:
            problems.append(f"{name}: no meaning in the README")
        if name not in defaulted or _templated(defaulted[name]) or default == "generated once":
            continue  # a template may be described in words ("first server", "generated once")
        try:
            documented = yaml.safe_load(default.strip("`").replace("\\|", "|"))
        except yaml.YAMLError:
            documented = default
        if documented != defaulted[name]:
            problems.append(f"{name}: the README says the default is {default}, defaults/main.yml {defaulted[name]!r}")
    return problems


def _scenario_variables(scenario: Path) -> set[str]:
    """Variables a Molecule scenario sets: its inventory's group and host variables, and its converge's play and task
    variables."""
    found: set[str] = set()
    inventory = (load(scenario / "molecule.yml") or {}).get("provisioner", {}).get("inventory", {})
    for group in (inventory.get("group_vars") or {}).values():
        found |= set(group or {})
    for host in (inventory.get("host_vars") or {}).values():
        found |= set(host or {})

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("vars"), dict):
                found.update(node["vars"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(load(scenario / "converge.yml"))
    return found


def the_all_options_scenario_sets_each_variable(role: Path) -> list[str]:
    scenario = role / "molecule" / "all-options"
    if not (scenario / "molecule.yml").is_file():
        return []
    return [
        f"{n}: left at its default by molecule/all-options"
        for n in sorted({*options(role)} - _scenario_variables(scenario))
    ]


CHECKS: list[Callable[[Path], list[str]]] = [
    spec_and_defaults_agree,
    defaults_live_only_in_defaults_main,
    defaults_have_the_declared_type_and_choice,
    variables_are_named_after_the_role,
    secrets_are_never_logged_and_have_no_fixed_default,
    the_readme_lists_each_variable_once_with_its_default,
    the_all_options_scenario_sets_each_variable,
]


def test_roles_exist() -> None:
    assert ROLE_DIRS, f"no roles under {ROLES}"


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("role", ROLE_DIRS, ids=lambda p: p.name)
def test_role(role: Path, check: Callable[[Path], list[str]]) -> None:
    assert (role / "meta" / "argument_specs.yml").is_file(), f"{role.name}: meta/argument_specs.yml is missing"
    problems = check(role)
    assert not problems, f"{role.name}: " + "; ".join(problems)


@pytest.fixture(scope="module")
def bogus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """dag_placement with a made-up variable, dag_placement_bogus, in its defaults and spec only."""
    role = tmp_path_factory.mktemp("roles") / "dag_placement"
    shutil.copytree(ROLES / "dag_placement", role)
    with (role / "defaults" / "main.yml").open("a") as file:
        file.write("\n# Made up.\ndag_placement_bogus: 1\n")
    specs = load(role / "meta" / "argument_specs.yml")
    specs["argument_specs"]["main"]["options"]["dag_placement_bogus"] = {"type": "int", "description": "Made up."}
    (role / "meta" / "argument_specs.yml").write_text(yaml.safe_dump(specs))
    return role


@pytest.mark.parametrize(
    ("check", "problem"),
    [
        (the_readme_lists_each_variable_once_with_its_default, "dag_placement_bogus: not in the README's variables"),
        (
            the_all_options_scenario_sets_each_variable,
            "dag_placement_bogus: left at its default by molecule/all-options",
        ),
    ],
    ids=lambda c: getattr(c, "__name__", ""),
)
def test_the_checks_find_a_made_up_variable(bogus: Path, check: Callable[[Path], list[str]], problem: str) -> None:
    assert any(p.startswith(problem) for p in check(bogus)), check(bogus)
