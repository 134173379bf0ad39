"""The argument specs of airflow_compose and gated_operator agree with their defaults, the defaults are valid, each
role's README lists every option with its default and meaning, and each all-options scenario sets every option."""

from pathlib import Path

import pytest
import yaml

ROLES = Path(__file__).resolve().parents[2] / "ansible" / "roles"
TYPES = {"str": str, "int": int, "bool": bool, "dict": dict, "list": list, "raw": object}


def load(role: str) -> tuple[dict, dict]:
    defaults = yaml.safe_load((ROLES / role / "defaults" / "main.yml").read_text())
    specs = yaml.safe_load((ROLES / role / "meta" / "argument_specs.yml").read_text())
    return defaults, specs["argument_specs"]["main"]["options"]


@pytest.mark.parametrize("role", ["airflow_compose", "gated_operator"])
def test_every_default_has_a_spec_and_every_spec_a_default(role: str) -> None:
    defaults, options = load(role)
    assert set(defaults) == set(options)


@pytest.mark.parametrize("role", ["airflow_compose", "gated_operator"])
def test_defaults_have_the_declared_type_and_a_listed_choice(role: str) -> None:
    defaults, options = load(role)
    for name, spec in options.items():
        value = defaults[name]
        assert isinstance(value, TYPES[spec["type"]]), name
        if "choices" in spec:
            assert value in spec["choices"], name
        assert spec.get("description"), name


def test_secrets_are_never_logged_and_have_no_fixed_default() -> None:
    defaults, options = load("airflow_compose")
    secrets = [n for n in options if n.endswith(("_password", "_secret", "_secret_key", "_fernet_key"))]
    assert len(secrets) == 5
    for name in secrets:
        assert options[name].get("no_log") is True, name
        assert "lookup('ansible.builtin.password'" in defaults[name], name


@pytest.mark.parametrize("role", ["airflow_compose", "gated_operator"])
def test_the_all_options_scenario_sets_every_option(role: str) -> None:
    _, options = load(role)
    converge = yaml.safe_load((ROLES / role / "molecule" / "all-options" / "converge.yml").read_text())
    unset = sorted(set(options) - set(converge[0]["vars"]))
    assert not unset, f"{role}: molecule/all-options/converge.yml leaves these at their defaults: {unset}"


@pytest.mark.parametrize("role", ["airflow_compose", "gated_operator"])
def test_the_readme_lists_every_option_with_its_default_and_meaning(role: str) -> None:
    defaults, options = load(role)
    readme = (ROLES / role / "README.md").read_text()
    rows = {}
    for line in readme.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) == 3:
            rows[cells[0].strip("`")] = cells[1:]
    assert set(rows) == set(options)
    for name, (default, meaning) in rows.items():
        assert meaning == options[name]["description"], name
        if default == "generated once":
            assert options[name].get("no_log") is True, name
        else:
            assert yaml.safe_load(default.strip("`")) == defaults[name], name
