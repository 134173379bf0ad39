"""The dag_placement role stops with one line, whatever the failure it reports spans: a failover refused after the
publishing lock was waited for, a distribution a server refused with a message of several lines, a Git push the
remote refused. Real ansible-playbook runs against throwaway local inventories, a real bare Git repository."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import yaml
from placement_site import ANSIBLE, Run, Site, make_site


def test_a_second_failover_of_the_same_server_at_once_stops_with_one_line(site: Site) -> None:
    """The drill's case: the second run waits for the first's publishing lock, then finds the move recorded."""
    runs = [site.start("failover.yml", "-e", "failed=server-1") for _ in range(2)]
    outputs = [run.communicate(timeout=300)[0] for run in runs]
    codes = [run.returncode for run in runs]
    assert sorted(code != 0 for code in codes) == [False, True], outputs
    [refused] = [output for code, output in zip(codes, outputs, strict=True) if code != 0]
    message = Run(1, refused, 0).failure()
    assert message == (
        "dag_placement: nothing published; no move recorded: failed=server-1: it is failed over already (restore it"
        " first) (failover order the inventory order; failed already: server-1)"
    )
    assert [m["failed"] for m in site.moves()] == ["server-1"]
    assert not site.publishing()


def test_a_server_refusing_the_document_with_a_message_of_several_lines_is_named_in_one_line(site: Site) -> None:
    """The file module's message names the directory, which here holds a line break: the message has two lines."""
    blocker = site.path / "blocker"
    blocker.write_text("a file where the server's directory should be\n")
    site.hosts["server-3"]["dag_placement_file_dir"] = f"{blocker}/first\nsecond"
    site.write()
    run = site.play("placement.yml", "-e", '{"dag_placement_document": {"*": "server-2"}}')
    assert run.returncode != 0
    message = run.failure()
    assert message == (
        "dag_placement: publish of serial 2 aborted, lock released: the document did not reach server-3"
        f" (There was an issue creating {blocker}/first)"
    )
    assert not site.publishing()


def test_a_git_push_the_remote_refuses_is_reported_in_one_line(tmp_path: Path) -> None:
    """git push writes the remote's refusal and its own summary to standard error, on lines of their own."""
    remote = tmp_path / "placement.git"
    _git(tmp_path, "init", "--quiet", "--bare", "--initial-branch=main", str(remote))
    seed = tmp_path / "seed"
    _git(tmp_path, "clone", "--quiet", str(remote), str(seed))
    _git(seed, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "--quiet", "--allow-empty", "-m", "start")
    _git(seed, "push", "--quiet", "origin", "HEAD:refs/heads/main")
    hook = remote / "hooks" / "pre-receive"
    hook.write_text('#!/bin/sh\necho "pushes to main need a review" >&2\nexit 1\n')
    hook.chmod(0o755)
    site = make_site(
        tmp_path / "site",
        group_vars={
            "dag_placement_publish": "git",
            "dag_placement_git_repo": str(remote),
            "dag_placement_git_workdir": str(tmp_path / "work"),
            "placement_source": "https://git.example.invalid/raw/main/airflow-dag-on-server.yaml",
        },
    )
    run = site.play("placement.yml")
    assert run.returncode != 0
    refusal = "remote: pushes to main need a review"
    assert run.failure() == f"dag_placement: publish of serial 1 aborted, lock released: {refusal}"
    assert not site.publishing()


def test_no_message_of_the_roles_and_playbooks_breaks_a_line_outside_a_template_expression() -> None:
    """A line of a folded (>-) message indented deeper than its neighbours keeps its line breaks; inside {{ }} they
    are only white space, outside they end up in the message."""
    broken = [
        f"{path.relative_to(ANSIBLE)}: {task.get('name', '(unnamed)')}: {key}"
        for path in sorted(ANSIBLE.rglob("*.yml"))
        if "molecule" not in path.parts
        for task in _tasks(yaml.safe_load(path.read_text()))
        for key, text in _messages(task)
        if "\n" in _outside_expressions(text)
    ]
    assert broken == []


def test_no_template_expression_looks_for_a_line_break_written_as_backslash_n() -> None:
    """Inside {{ }} of a block scalar Ansible escapes the backslash: split('\\n') there never splits (the drill's
    second failover message kept its two lines); splitlines() does."""
    found = [
        f"{path.relative_to(ANSIBLE)}: {expression.strip()[:60]}"
        for path in sorted(ANSIBLE.rglob("*.yml"))
        for text in _strings(yaml.safe_load(path.read_text()))
        for expression in re.findall(r"\{\{(.*?)\}\}", text, flags=re.DOTALL)
        if "\\n" in expression
    ]
    assert found == []


MESSAGES = ("msg", "fail_msg", "success_msg")


def _assertion(output: str) -> str:
    """The message of the failed check of assert.yml's loop (its line is "failed: [host] (item=...) => {...}")."""
    [line] = [line for line in output.splitlines() if line.startswith("failed: ") and " => {" in line]
    return str(json.loads(line.split(" => ", 1)[1])["msg"])


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def _tasks(node: object) -> list[dict[str, object]]:
    """Every mapping of a playbook or task file that may be a task, blocks and plays included."""
    found: list[dict[str, object]] = []
    if isinstance(node, list):
        for item in node:
            found += _tasks(item)
    elif isinstance(node, dict):
        found.append(node)
        for value in node.values():
            if isinstance(value, list | dict):
                found += _tasks(value)
    return found


def _strings(node: object) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [text for key, value in node.items() for text in _strings(key) + _strings(value)]
    if isinstance(node, list):
        return [text for item in node for text in _strings(item)]
    return []


def _messages(task: dict[str, object]) -> list[tuple[str, str]]:
    """The messages a task shows: fail's and debug's msg, assert's fail_msg and success_msg, and the task's vars
    (a message is often assembled in one)."""
    found: list[tuple[str, str]] = []
    for module in ("ansible.builtin.fail", "ansible.builtin.debug", "ansible.builtin.assert"):
        arguments = task.get(module)
        if isinstance(arguments, dict):
            found += [(key, text) for key, text in arguments.items() if key in MESSAGES and isinstance(text, str)]
    variables = task.get("vars")
    if isinstance(variables, dict) and found:
        found += [(str(key), value) for key, value in variables.items() if isinstance(value, str)]
    return found


def _outside_expressions(text: str) -> str:
    """``text`` without its Jinja expressions, statements and comments (their line breaks are white space), and
    without the white space they strip (``{%-``, ``-%}``, and Ansible's trim_blocks: the line break after ``%}``)."""
    text = re.sub(r"\s*(\{[{%#]-)", r"\1", text)
    text = re.sub(r"(-[}%#]\})\s*", r"\1", text)
    text = re.sub(r"(%\})\n", r"\1", text)
    return re.sub(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", "", text, flags=re.DOTALL)


def test_servers_reading_another_source_than_the_one_published_to_stop_the_publish_in_one_line(site: Site) -> None:
    """placement_source is the inventory's one name for what the servers read; the role checks it before anything."""
    before = site.files()
    published = f"{site.publish_dir('server-1')}/airflow-dag-on-server.yaml"
    elsewhere = site.play("placement.yml", "-e", "placement_source=/srv/elsewhere.yaml")
    assert elsewhere.returncode != 0
    assert _assertion(elsewhere.output) == (
        "placement_source (/srv/elsewhere.yaml) must be where dag_placement_publish=file publishes: " + published
    )
    git = site.play("placement.yml", "-e", "dag_placement_publish=git", "-e", "dag_placement_git_repo=/srv/repo.git")
    assert git.returncode != 0
    assert _assertion(git.output) == (
        f"placement_source (unset: the servers read {published}) must be where dag_placement_publish=git publishes: "
        "the forge's raw-file URL of airflow-dag-on-server.yaml on branch main"
    )
    assert site.files() == before
    # A URL that serves the published file (placement_watchdog's confirming source) is where file publishing goes.
    confirming = "placement_source=https://publisher.example:8765/airflow-dag-on-server.yaml"
    assert site.play("placement.yml", "--check", "-e", confirming).returncode == 0
