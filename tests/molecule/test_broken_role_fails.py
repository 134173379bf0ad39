"""The Molecule suite catches a role that is not idempotent: scripts/molecule.sh runs a fixture role that changes
something on every run (tests/molecule-fixtures/roles/broken_idempotence) and must fail in its idempotence step."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FIXTURE_ROLES = REPO / "tests" / "molecule-fixtures" / "roles"


@pytest.mark.podman
@pytest.mark.skipif(shutil.which("podman") is None, reason="needs podman to create the server container")
def test_a_role_that_changes_on_every_run_fails_the_idempotence_check() -> None:
    env = {**os.environ, "MOLECULE_ROLES_DIR": str(FIXTURE_ROLES)}
    build = subprocess.run([REPO / "images" / "build.sh", "debian-systemd:12"], env=env, check=False)
    assert build.returncode == 0, "images/build.sh debian-systemd:12 failed"

    run = subprocess.run(
        [REPO / "scripts" / "molecule.sh", "broken_idempotence", "--platform", "debian12"],
        env={**env, "SKIP_IMAGES": "1"},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    output = run.stdout + run.stderr
    assert run.returncode != 0, f"the non-idempotent fixture passed Molecule:\n{output[-3000:]}"
    assert "Idempotence test failed" in output, f"it failed, but not in the idempotence step:\n{output[-3000:]}"
    assert "default > converge] Executed: Successful" in output, f"converge itself failed:\n{output[-3000:]}"
