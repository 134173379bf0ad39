"""The dag_placement role signs by default: a key made once on the controller (0600, never replaced), every document
it publishes or renews signed with it, each server given its public key; a controller without the key the servers
were given stops in one line before it makes a new one. Real ansible-playbook runs against throwaway local
inventories (placement_site); the servers' side (refusing what the key did not sign) is the package's, checked here
with its own CLI."""

from __future__ import annotations

import shutil
import stat
import subprocess

from placement_site import CLI, DOCUMENT, Site


def _key(site: Site) -> str:
    return (site.inventory / ".secrets" / "dag_placement" / "signing_key.pub").read_text().strip()


def _verifies(site: Site, server: str, public_key: str) -> bool:
    document = site.publish_dir(server) / DOCUMENT
    check = [CLI, "check", str(document), "--public-key", public_key]
    return subprocess.run(check, capture_output=True, text=True, check=False).returncode == 0


def test_documents_are_signed_with_a_key_made_once_and_renewals_too(site: Site) -> None:
    key_file = site.inventory / ".secrets" / "dag_placement" / "signing_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700
    public_key = _key(site)
    for server in site.servers:
        assert _verifies(site, server, public_key)
        assert (site.publish_dir(server) / "publisher.pub").read_text().strip() == public_key
    run = site.play("renew.yml")
    assert run.returncode == 0, run.output
    assert _key(site) == public_key  # not made again
    assert all(_verifies(site, server, public_key) for server in site.servers)


def test_a_controller_without_the_servers_key_stops_before_making_one(site: Site) -> None:
    shutil.rmtree(site.inventory / ".secrets")  # a fresh checkout: .secrets/ is git-ignored
    before = site.files()
    run = site.play("placement.yml")
    assert run.returncode != 0
    message = run.failure()
    assert message.startswith("dag_placement: server-1, server-2, server-3 trust documents signed with another key")
    assert "signing_key is missing" in message and "restore the signing key" in message
    assert "\n" not in message
    assert not (site.inventory / ".secrets").exists()
    assert site.files() == before


def test_a_document_not_signed_by_the_key_is_issued_again_signed(site: Site) -> None:
    """A new key on servers given none yet (signing turned on, or its first publish): the document they hold is not
    signed by it, so the same owners go out again, signed, under the next serial."""
    shutil.rmtree(site.inventory / ".secrets")
    for server in site.servers:
        (site.publish_dir(server) / "publisher.pub").unlink()
    serial = site.meta("server-1").serial
    run = site.play("placement.yml")
    assert run.returncode == 0, run.output
    public_key = _key(site)
    for server in site.servers:
        assert site.meta(server).serial == serial + 1
        assert _verifies(site, server, public_key)
