"""Every role's meta/argument_specs.yml and defaults/main.yml agree: the same variables, defaults of the declared
type and within the declared choices, defaults only in defaults/main.yml, and every variable named after its role."""

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


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text()) if path.is_file() else None


def options(role: Path) -> dict[str, dict[str, Any]]:
    specs = load(role / "meta" / "argument_specs.yml") or {}
    return specs.get("argument_specs", {}).get("main", {}).get("options") or {}


def defaults(role: Path) -> dict[str, Any]:
    return load(role / "defaults" / "main.yml") or {}


def test_roles_exist() -> None:
    assert ROLE_DIRS, f"no roles under {ROLES}"


@pytest.mark.parametrize("role", ROLE_DIRS, ids=lambda p: p.name)
def test_role_has_an_argument_spec(role: Path) -> None:
    assert (role / "meta" / "argument_specs.yml").is_file(), f"{role.name}: meta/argument_specs.yml is missing"


@pytest.mark.parametrize("role", ROLE_DIRS, ids=lambda p: p.name)
def test_every_default_is_specified_and_every_option_has_a_default_or_is_required(role: Path) -> None:
    specified, defaulted = options(role), defaults(role)
    unspecified = sorted(set(defaulted) - set(specified))
    assert not unspecified, f"{role.name}: in defaults/main.yml but not in meta/argument_specs.yml: {unspecified}"
    orphaned = sorted(name for name, spec in specified.items() if name not in defaulted and not spec.get("required"))
    assert not orphaned, f"{role.name}: optional in the spec but without a default in defaults/main.yml: {orphaned}"
    required_with_default = sorted(
        name for name, spec in specified.items() if spec.get("required") and name in defaulted
    )
    assert not required_with_default, f"{role.name}: required in the spec, yet defaulted: {required_with_default}"


def _spec_defaults(spec: dict[str, Any], where: str) -> list[str]:
    found = [where] if "default" in spec else []
    for name, sub in (spec.get("options") or {}).items():
        found += _spec_defaults(sub, f"{where}.{name}")
    return found


@pytest.mark.parametrize("role", ROLE_DIRS, ids=lambda p: p.name)
def test_defaults_live_only_in_defaults_main(role: Path) -> None:
    in_spec = [where for name, spec in options(role).items() for where in _spec_defaults(spec, name)]
    assert not in_spec, f"{role.name}: meta/argument_specs.yml sets `default:` for {in_spec}; use defaults/main.yml"


@pytest.mark.parametrize("role", ROLE_DIRS, ids=lambda p: p.name)
def test_defaults_have_the_declared_type_and_choice(role: Path) -> None:
    specified = options(role)
    problems = []
    for name, value in defaults(role).items():
        spec = specified.get(name, {})
        kind = spec.get("type", "str")
        if isinstance(value, str) and "{{" in value:
            continue  # a template: its type is only known when Ansible renders it
        if not isinstance(value, TYPES.get(kind, (object,))) or (kind in ("int", "float") and isinstance(value, bool)):
            problems.append(f"{name}={value!r} is not of type {kind}")
        elif isinstance(value, list) and "elements" in spec:
            wrong = [v for v in value if not isinstance(v, TYPES.get(spec["elements"], (object,)))]
            if wrong:
                problems.append(f"{name} has elements that are not {spec['elements']}: {wrong!r}")
        if "choices" in spec and value not in spec["choices"]:
            problems.append(f"{name}={value!r} is not one of {spec['choices']}")
    assert not problems, f"{role.name}: " + "; ".join(problems)


@pytest.mark.parametrize("role", ROLE_DIRS, ids=lambda p: p.name)
def test_variables_are_named_after_the_role(role: Path) -> None:
    prefix = f"{role.name}_"
    misnamed = sorted(name for name in {*options(role), *defaults(role)} if not name.startswith(prefix))
    assert not misnamed, f"{role.name}: variables without the {prefix} prefix: {misnamed}"
