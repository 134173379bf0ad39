"""The podman role's all-options scenario sets every option of meta/argument_specs.yml on every platform, and the
role's README lists every option with its default from defaults/main.yml."""

from pathlib import Path
from typing import Any

import yaml

ROLE = Path(__file__).resolve().parents[2] / "ansible" / "roles" / "podman"


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def options() -> dict[str, Any]:
    options: dict[str, Any] = load(ROLE / "meta" / "argument_specs.yml")["argument_specs"]["main"]["options"]
    return options


def test_the_all_options_scenario_sets_every_option() -> None:
    scenario = load(ROLE / "molecule" / "all-options" / "molecule.yml")
    assert "platforms" not in scenario, "all-options runs on the shared platforms (Debian 12 and 13)"
    inventory = scenario["provisioner"]["inventory"]
    set_for_all = set(inventory["group_vars"]["all"])
    unset = sorted(set(options()) - set_for_all)
    assert not unset, f"molecule/all-options/molecule.yml leaves these at their defaults: {unset}"
    unknown = sorted(
        name
        for variables in [inventory["group_vars"]["all"], *inventory.get("host_vars", {}).values()]
        for name in variables
        if name not in options()
    )
    assert not unknown, f"molecule/all-options/molecule.yml sets variables the role does not have: {unknown}"


def test_the_readme_lists_every_option_with_its_default() -> None:
    defaults = load(ROLE / "defaults" / "main.yml")
    rows = {}
    for line in (ROLE / "README.md").read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) == 3:
            rows[cells[0].strip("`")] = cells[1]
    assert set(rows) == set(options())
    for name, default in rows.items():
        assert yaml.safe_load(default.strip("`")) == defaults[name], name
