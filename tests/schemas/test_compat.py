"""Versioning: BACKWARD_TRANSITIVE checks, frozen versions and deliberately breaking changes."""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from schemas import avsc, compat
from schemas.avsc import load_current
from schemas.compat import Version, check, example_issues, resolution_issues, upgrade_examples

REPO = Path(__file__).resolve().parents[2]


def _current() -> dict[str, Any]:
    return copy.deepcopy(load_current())


def _field(schema: dict[str, Any], name: str) -> dict[str, Any]:
    return next(f for f in schema["fields"] if f["name"] == name)


def _messages(issues: list[Any]) -> list[str]:
    return [str(i) for i in issues]


def _versions_with(name: str, schema: dict[str, Any], versions: list[Version]) -> list[Version]:
    """`versions` plus a v2 that freezes `schema` for `name` (as if released)."""
    latest = versions[-1]
    try:
        examples = list(upgrade_examples(latest.examples[name], latest.schemas[name], schema))
    except Exception:  # a breaking change: the old examples cannot be upgraded
        examples = list(latest.examples[name])
    return [
        *versions,
        Version(
            f"v{len(versions) + 1}",
            {**latest.schemas, name: schema},
            {**latest.examples, name: examples},
        ),
    ]


def test_repository_is_compatible() -> None:
    assert _messages(check()) == []


def test_cli_passes_on_the_repository() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "schemas.compat"], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


# -- deliberately breaking changes: each must fail, naming the field and why ----------------


def test_type_change_breaks(versions: list[Version]) -> None:
    current = _current()
    _field(current["RunRenamed"], "name")["type"] = "long"
    issues = check(current, _versions_with("RunRenamed", current["RunRenamed"], versions))
    assert "RunRenamed.name: type changed from string to long (not a legal Avro promotion)" in (
        _messages(issues)
    )
    assert any(
        i.field == "RunRenamed" and "does not decode with the current reader" in i.reason
        for i in issues
    ), "the frozen examples must fail to decode too"


def test_nested_envelope_type_change_names_the_path(versions: list[Version]) -> None:
    current = _current()
    _field(_field(current["TagsSet"], "envelope")["type"], "seq")["type"] = "string"
    issues = resolution_issues(versions[0].schemas["TagsSet"], current["TagsSet"], "TagsSet")
    assert [i.field for i in issues] == ["TagsSet.envelope.seq"]
    assert "type changed from long to string" in issues[0].reason


def test_removed_field_without_default_breaks(versions: list[Version]) -> None:
    current = _current()
    current["RunRenamed"]["fields"] = [
        f for f in current["RunRenamed"]["fields"] if f["name"] != "name"
    ]
    issues = check(current, _versions_with("RunRenamed", current["RunRenamed"], versions))
    [issue] = [i for i in issues if i.field == "RunRenamed.name"]
    assert "field removed but it has no default in v1" in issue.reason


def test_removed_field_with_default_is_fine(versions: list[Version]) -> None:
    current = _current()
    current["TagsSet"]["fields"] = [f for f in current["TagsSet"]["fields"] if f["name"] != "tags"]
    assert _messages(check(current, _versions_with("TagsSet", current["TagsSet"], versions))) == []


def test_added_field_without_default_breaks(versions: list[Version]) -> None:
    current = _current()
    current["RunNoteSet"]["fields"].append({"name": "author", "type": "string", "doc": "who"})
    issues = check(current, _versions_with("RunNoteSet", current["RunNoteSet"], versions))
    [issue] = [i for i in issues if i.field == "RunNoteSet.author"]
    assert issue.reason.startswith("field added without a default")
    assert str(issue).startswith("RunNoteSet.author: field added without a default")


def test_added_field_with_default_and_promotion_are_fine(versions: list[Version]) -> None:
    current = _current()
    current["RunNoteSet"]["fields"].append(
        {"name": "author", "type": ["null", "string"], "default": None, "doc": "who"}
    )
    _field(current["ProducerJoined"], "rank")["type"] = ["null", "long"]  # int -> long
    changed = _versions_with("RunNoteSet", current["RunNoteSet"], versions)
    changed = _versions_with("ProducerJoined", current["ProducerJoined"], changed)
    assert _messages(check(current, changed)) == []


def test_enum_symbol_removal_breaks(versions: list[Version]) -> None:
    current = _current()
    status = _field(current["RunStatusChanged"], "status")["type"]
    status["symbols"] = ["RUNNING", "FINISHED", "FAILED"]
    issues = resolution_issues(
        versions[0].schemas["RunStatusChanged"], current["RunStatusChanged"], "RunStatusChanged"
    )
    assert [i.field for i in issues] == ["RunStatusChanged.status"]
    assert "lost symbol(s) KILLED" in issues[0].reason
    status["default"] = "FAILED"  # an enum default makes the removal readable
    assert (
        resolution_issues(
            versions[0].schemas["RunStatusChanged"],
            current["RunStatusChanged"],
            "RunStatusChanged",
        )
        == []
    )


def test_removed_event_type_breaks(versions: list[Version]) -> None:
    current = _current()
    del current["RunRestored"]
    assert any(
        i.field == "RunRestored" and "event type removed" in i.reason
        for i in check(current, versions)
    )


def test_editing_a_frozen_version_in_place_fails(versions: list[Version]) -> None:
    current = _current()
    _field(current["ArtifactStored"], "size")["doc"] = "Size in bytes, edited."
    issues = check(current, versions)
    assert _messages(issues) == [
        "ArtifactStored.size (doc): differs from frozen v1: released versions are immutable; "
        "freeze a new version (python -m schemas.compat --freeze)"
    ]


def test_new_event_type_must_be_frozen(versions: list[Version]) -> None:
    current = _current()
    current["RunArchived"] = {**current["RunDeleted"], "name": "RunArchived"}
    assert any(
        i.field == "RunArchived" and "new event type" in i.reason for i in check(current, versions)
    )


def test_examples_must_validate(versions: list[Version]) -> None:
    writer = versions[0].schemas["RunRenamed"]
    bad = copy.deepcopy(versions[0].examples["RunRenamed"][0])
    bad["name"] = 5
    issues = example_issues("RunRenamed", "v1", writer, [bad], writer)
    assert _messages(issues) == ["RunRenamed.name: v1 example 0: expected string, got int 5"]
    bad = copy.deepcopy(versions[0].examples["RunRenamed"][0])
    bad["envelope"]["run_id"] = None
    issues = example_issues("RunRenamed", "v1", writer, [bad], writer)
    assert len(issues) == 1
    assert "envelope.run_id" in issues[0].reason
    assert example_issues("RunRenamed", "v1", writer, [], writer)[0].reason.startswith(
        "v1 has no examples"
    )


def test_freeze_creates_the_next_version_with_upgraded_examples(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    shutil.copytree(avsc.VERSIONS_DIR, tmp_path / "versions")
    monkeypatch.setattr(avsc, "VERSIONS_DIR", tmp_path / "versions")
    current = _current()
    current["RunNoteSet"]["fields"].append(
        {"name": "author", "type": "string", "default": "anonymous", "doc": "who"}
    )
    monkeypatch.setattr(avsc, "load_current", lambda: current)
    assert compat.main([]) == 1  # not frozen yet
    assert "RunNoteSet.author: differs from frozen v1" in capsys.readouterr().out
    target = compat.freeze()
    assert target == tmp_path / "versions" / "v2"
    assert compat.freeze() is None  # nothing left to freeze
    frozen = compat.load_versions()
    assert [v.label for v in frozen] == ["v1", "v2"]
    upgraded = frozen[1].examples["RunNoteSet"][0]
    assert upgraded["author"] == "anonymous"
    assert _messages(check(current, frozen)) == []
    assert compat.main([]) == 0
