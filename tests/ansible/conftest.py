"""Fixtures of the dag_placement tests: a site whose document was published once, copied for every test that
starts from it (placement.yml runs once per session, not once per test)."""

from __future__ import annotations

from pathlib import Path

import pytest
from placement_site import Site, make_site


@pytest.fixture(scope="session")
def published_site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    site = make_site(tmp_path_factory.mktemp("published-site"))
    run = site.play("placement.yml")
    assert run.returncode == 0, run.output
    return site


@pytest.fixture
def site(published_site: Site, tmp_path: Path) -> Site:
    """The three servers of make_site, serial 1 published to each (placement.yml), in this test's own directory."""
    return published_site.copy_to(tmp_path)
