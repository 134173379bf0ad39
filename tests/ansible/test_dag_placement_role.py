"""The dag_placement role documents every variable it has (tests/ansible/test_argument_specs.py checks the spec)."""

from __future__ import annotations

from pathlib import Path

import yaml

ROLE = Path(__file__).resolve().parents[2] / "ansible" / "roles" / "dag_placement"


def test_every_variable_is_documented_in_the_readme() -> None:
    readme = (ROLE / "README.md").read_text()
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    missing = [name for name in defaults if name not in readme and name.rsplit("_", 1)[0] + "_" not in readme]
    assert not missing
