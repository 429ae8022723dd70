"""The rule loader: compile cache, problems with kinds and files, collect-all, bad paths."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from watchkeeper.detect.sigma import loader
from watchkeeper.detect.sigma.loader import cache_dir, load_rules
from watchkeeper.errors import RuleError, WatchkeeperError


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("WATCHKEEPER_CACHE", str(cache))
    return cache


def rule_text(title: str, needle: str = "whoami", rule_id: str | None = None) -> str:
    return f"""\
title: {title}
id: {rule_id or uuid.uuid4()}
status: test
description: loader test
logsource:
  category: process_creation
  product: windows
detection:
  selection:
    Image|endswith: '\\{needle}.exe'
  condition: selection
level: medium
"""


INVALID_YAML = "title: Broken YAML\nlogsource: {product: windows\ndetection:\n  sel: [a, b\n"
INVALID_SIGMA = """\
title: No condition
id: 5b1f8f02-52c4-4ab4-a4c2-8a1b7f5d7c10
logsource:
  product: windows
detection:
  selection:
    Image|endswith: '\\x.exe'
level: high
"""
UNKNOWN_MODIFIER = """\
title: Unknown modifier
id: 0e0f9b0c-7f84-4a3c-8a55-3f1f1f6a2b11
logsource:
  product: windows
detection:
  selection:
    Image|sounds_like: 'cmd'
  condition: selection
level: high
"""
UNDEFINED_IDENTIFIER = """\
title: Undefined identifier
id: 2a7c4b1e-0c55-4d1b-8f0f-7e5e2d9b3a12
logsource:
  product: windows
detection:
  selection:
    Image|endswith: '\\x.exe'
  condition: selection and not filter
level: high
"""
BASE_RULE = """\
title: Failed logon
id: 6f3b1c4e-2a1d-4c2e-9b8a-5d7e1f0a9c31
name: failed_logon
status: test
logsource:
  product: windows
  service: security
detection:
  selection:
    EventID: 4625
  condition: selection
level: low
"""
CORRELATION = """\
title: Many failed logons
id: 0d2b8b9e-5f1b-4a8e-9d58-2fbb1e6a6e11
correlation:
  type: event_count
  rules:
    - 6f3b1c4e-2a1d-4c2e-9b8a-5d7e1f0a9c31
  group-by:
    - TargetUserName
  timespan: 5m
  condition:
    gte: 10
level: high
"""


def write(folder: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def test_second_load_compiles_nothing(tmp_path: Path) -> None:
    rules = write(tmp_path / "rules", {f"r{i}.yml": rule_text(f"Rule {i}") for i in range(3)})
    cold = load_rules([rules])
    assert (cold.files, cold.compiled, len(cold.rules), cold.problems) == (3, 3, 3, [])
    warm = load_rules([rules])
    assert (warm.files, warm.compiled) == (3, 0)
    assert warm.rules == cold.rules


def test_changed_file_recompiles_only_that_file(tmp_path: Path) -> None:
    rules = write(tmp_path / "rules", {f"r{i}.yml": rule_text(f"Rule {i}") for i in range(3)})
    load_rules([rules])
    (rules / "r1.yml").write_text(rule_text("Rule 1 changed", needle="net"), encoding="utf-8")
    again = load_rules([rules])
    assert again.compiled == 1
    assert sorted(r.title for r in again.rules) == ["Rule 0", "Rule 1 changed", "Rule 2"]
    # A new file is one more compile; a removed one costs none.
    (rules / "r3.yml").write_text(rule_text("Rule 3"), encoding="utf-8")
    (rules / "r0.yml").unlink()
    last = load_rules([rules])
    assert (last.files, last.compiled) == (3, 1)
    assert sorted(r.title for r in last.rules) == ["Rule 1 changed", "Rule 2", "Rule 3"]


def test_placeholders_are_part_of_the_cache_key(tmp_path: Path) -> None:
    expand = rule_text("Admins").replace("Image|endswith: '\\whoami.exe'", "User|expand: '%admins%'")
    rules = write(tmp_path / "rules", {"admins.yml": expand, "plain.yml": rule_text("Plain")})
    without = load_rules([rules])
    assert [p.kind for p in without.problems] == ["unsupported"]
    with_values = load_rules([rules], placeholders={"admins": ["CORP\\alice"]})
    assert with_values.compiled == 2
    assert sorted(r.title for r in with_values.rules) == ["Admins", "Plain"]
    assert with_values.problems == []


def test_no_cache_always_compiles_and_writes_nothing(tmp_path: Path, _private_cache: Path) -> None:
    rules = write(tmp_path / "rules", {"r.yml": rule_text("Rule")})
    assert load_rules([rules], use_cache=False).compiled == 1
    assert load_rules([rules], use_cache=False).compiled == 1
    assert not _private_cache.exists()


def _garbage(data: bytes) -> bytes:
    return b"this is not a pickle\n"


def _truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _empty(data: bytes) -> bytes:
    return b""


def _bad_utf8_in_a_string(data: bytes) -> bytes:
    # One flipped byte inside a pickled rule title: the pickle no longer decodes as UTF-8.
    at = data.index(b"Rule 1")
    return data[:at] + b"\xff" + data[at + 1 :]


@pytest.mark.parametrize("corrupt", [
    _garbage, _truncated, _empty,
    _bad_utf8_in_a_string,
])
def test_corrupt_cache_file_is_ignored(tmp_path: Path, _private_cache: Path,
                                       corrupt: Callable[[bytes], bytes]) -> None:
    rules = write(tmp_path / "rules", {f"r{i}.yml": rule_text(f"Rule {i}") for i in range(3)})
    cold = load_rules([rules])
    [cache_file] = cache_dir().glob("sigma-*.pickle")
    cache_file.write_bytes(corrupt(cache_file.read_bytes()))
    again = load_rules([rules])
    assert again.compiled == 3
    assert again.rules == cold.rules
    assert again.problems == []
    assert load_rules([rules]).compiled == 0  # and the cache was rewritten whole


@pytest.mark.parametrize(("text", "reason"), [
    (INVALID_YAML, "yaml"),
    (INVALID_SIGMA, "condition"),
    (UNKNOWN_MODIFIER, "sounds_like"),
    (UNDEFINED_IDENTIFIER, "filter"),
], ids=["invalid-yaml", "invalid-sigma", "unknown-modifier", "undefined-identifier"])
def test_invalid_rule_is_an_error_naming_the_file(tmp_path: Path, text: str, reason: str) -> None:
    rules = write(tmp_path / "rules", {"bad.yml": text, "good.yml": rule_text("Good")})
    ruleset = load_rules([rules])
    assert [r.title for r in ruleset.rules] == ["Good"]
    [problem] = ruleset.problems
    assert problem.kind == "error"
    assert problem.path == str(rules / "bad.yml")
    assert reason in problem.reason.lower()


def test_invalid_rule_problem_is_cached_too(tmp_path: Path) -> None:
    rules = write(tmp_path / "rules", {"bad.yml": INVALID_SIGMA})
    first = load_rules([rules])
    second = load_rules([rules])
    assert second.compiled == 0
    assert second.problems == first.problems
    assert len(second.problems) == 1


@pytest.mark.parametrize("layout", [
    pytest.param({"rules.yml": BASE_RULE + "---\n" + CORRELATION}, id="same-file"),
    pytest.param({"base.yml": BASE_RULE, "corr.yml": CORRELATION}, id="own-file"),
])
def test_correlation_rule_is_unsupported_with_a_reason(tmp_path: Path, layout: dict[str, str]) -> None:
    rules = write(tmp_path / "rules", layout)
    ruleset = load_rules([rules])
    assert [r.title for r in ruleset.rules] == ["Failed logon"]
    [problem] = ruleset.problems
    assert problem.kind == "unsupported"
    assert problem.title == "Many failed logons"
    assert problem.rule_id == "0d2b8b9e-5f1b-4a8e-9d58-2fbb1e6a6e11"
    assert "correlation" in problem.reason


def test_collect_all_reports_every_bad_rule_and_loads_the_good(tmp_path: Path) -> None:
    rules = write(tmp_path / "rules", {
        "a_undefined.yml": UNDEFINED_IDENTIFIER,
        "b_good.yml": rule_text("Good one"),
        "sub/c_bad_sigma.yaml": INVALID_SIGMA,
        "d_good.yaml": rule_text("Good two"),
        "e_bad_modifier.yml": UNKNOWN_MODIFIER,
        "notes.txt": "not a rule file, not read",
    })
    ruleset = load_rules([rules])
    assert ruleset.files == 5
    assert sorted(r.title for r in ruleset.rules) == ["Good one", "Good two"]
    assert sorted(Path(p.path).name for p in ruleset.problems) == [
        "a_undefined.yml", "c_bad_sigma.yaml", "e_bad_modifier.yml"]
    assert {p.kind for p in ruleset.problems} == {"error"}


def test_collect_all_includes_bad_yaml(tmp_path: Path) -> None:
    rules = write(tmp_path / "rules", {
        "a_bad_yaml.yml": INVALID_YAML, "b_good.yml": rule_text("Good"), "c_bad_sigma.yml": INVALID_SIGMA})
    ruleset = load_rules([rules])
    assert [r.title for r in ruleset.rules] == ["Good"]
    assert sorted(Path(p.path).name for p in ruleset.problems) == ["a_bad_yaml.yml", "c_bad_sigma.yml"]


def test_multi_document_file_loads_every_rule(tmp_path: Path) -> None:
    text = rule_text("First") + "---\n" + rule_text("Second", needle="net")
    ruleset = load_rules([write(tmp_path / "rules", {"two.yml": text})])
    assert sorted(r.title for r in ruleset.rules) == ["First", "Second"]
    assert {r.path for r in ruleset.rules} == {str(tmp_path / "rules" / "two.yml")}


def test_same_content_at_two_paths_reports_each_path(tmp_path: Path) -> None:
    text = rule_text("Twin", rule_id="1c0e8f55-4b1b-4a67-9a2e-1f3f9b8d2c44")
    a = write(tmp_path / "a", {"twin.yml": text})
    b = write(tmp_path / "b", {"twin.yml": text})
    ruleset = load_rules([a, b])
    assert sorted(r.path for r in ruleset.rules) == [str(a / "twin.yml"), str(b / "twin.yml")]


def test_absent_rules_path_is_a_rule_error(tmp_path: Path) -> None:
    good = write(tmp_path / "rules", {"r.yml": rule_text("Rule")})
    missing = tmp_path / "no-such-rules"
    with pytest.raises(RuleError) as info:
        load_rules([good, missing])
    assert isinstance(info.value, WatchkeeperError)
    assert str(missing) in str(info.value)


def test_filter_file_is_loaded_as_a_filter(tmp_path: Path) -> None:
    flt = """\
title: Jump host
id: 0c5e7a52-7c1b-4f0e-8d0a-2b9c6f1e4d77
logsource:
  category: process_creation
  product: windows
filter:
  rules:
    - 1c0e8f55-4b1b-4a67-9a2e-1f3f9b8d2c44
  selection:
    ParentImage|endswith: '\\jumphost-agent.exe'
  condition: not selection
"""
    rules = write(tmp_path / "rules", {
        "rule.yml": rule_text("Whoami", rule_id="1c0e8f55-4b1b-4a67-9a2e-1f3f9b8d2c44"), "filter.yml": flt})
    ruleset = load_rules([rules])
    assert ruleset.problems == []
    assert [(f.title, f.rules) for f in ruleset.filters] == [("Jump host", ("1c0e8f55-4b1b-4a67-9a2e-1f3f9b8d2c44",))]


def _reads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Record every rule file the loader reads from now on."""
    seen: list[Path] = []
    original = Path.read_bytes

    def read_bytes(self: Path) -> bytes:
        seen.append(self)
        return original(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    return seen


def test_settled_unchanged_files_are_not_read_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loader, "SETTLED_NS", 0)  # every file written so far counts as settled
    rules = write(tmp_path / "rules", {f"r{i}.yml": rule_text(f"Rule {i}") for i in range(3)})
    cold = load_rules([rules])
    reads = _reads(monkeypatch)
    warm = load_rules([rules])
    assert (warm.compiled, reads) == (0, [])
    assert warm.rules == cold.rules
    # Same size, other content: the stamp (mtime, ctime) differs, so the file is read and recompiled.
    (rules / "r1.yml").write_text(rule_text("Rule 9"), encoding="utf-8")
    again = load_rules([rules])
    assert again.compiled == 1 and reads == [rules / "r1.yml"]
    assert sorted(r.title for r in again.rules) == ["Rule 0", "Rule 2", "Rule 9"]


def test_files_changed_just_now_are_read_every_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A file may change again within one timestamp tick: until it settles, its stamp is not trusted.
    rules = write(tmp_path / "rules", {"r.yml": rule_text("Rule")})
    load_rules([rules])
    reads = _reads(monkeypatch)
    assert load_rules([rules]).compiled == 0
    assert reads == [rules / "r.yml"]


def test_rule_files_are_ordered_like_sorted_paths(tmp_path: Path) -> None:
    rules = write(tmp_path / "rules", {
        name: rule_text(name) for name in ("b.yml", "a-b/x.yml", "a/x.yaml", "a/.y.yml", "A.yml", "c.txt", ".yml")
    })
    (rules / "dir.yml").mkdir()
    expected = sorted(q for q in rules.rglob("*") if q.suffix in loader.RULE_SUFFIXES and q.is_file())
    assert loader.rule_files([rules]) == expected
    assert [str(p.relative_to(rules)) for p in expected] == ["A.yml", "a/.y.yml", "a/x.yaml", "a-b/x.yml", "b.yml"]
