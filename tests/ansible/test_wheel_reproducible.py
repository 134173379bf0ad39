"""The wheel gated_operator builds is the same bytes for the same code, whatever happens to the project README.

The role names the servers' derived Airflow image after the wheel's checksum, so a wheel that changes with
unrelated files would rebuild the image on every server and break `site.yml --check` reporting changed=0.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def build_wheel(project: Path, out: Path) -> str:
    """Build the wheel as install.yml does and return its sha256."""
    out.mkdir()
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(out), str(project)],
        check=True,
        env={**os.environ, "SOURCE_DATE_EPOCH": "315532800"},
    )
    (wheel,) = out.glob("airflow_placement-*.whl")
    return hashlib.sha256(wheel.read_bytes()).hexdigest()


def copy_project(dest: Path) -> Path:
    shutil.copytree(ROOT / "operator", dest / "operator", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    return dest


def test_project_readme_does_not_change_the_wheel(tmp_path: Path) -> None:
    project = copy_project(tmp_path / "project")
    first = build_wheel(project, tmp_path / "first")
    (project / "README.md").write_text((project / "README.md").read_text() + "\nAn edit to the project README.\n")
    assert build_wheel(project, tmp_path / "second") == first


def test_code_change_changes_the_wheel(tmp_path: Path) -> None:
    """The negative control: the comparison above can fail."""
    project = copy_project(tmp_path / "project")
    first = build_wheel(project, tmp_path / "first")
    module = project / "operator/src/airflow_placement/decision.py"
    module.write_text(module.read_text() + "\n# a code change\n")
    assert build_wheel(project, tmp_path / "second") != first
