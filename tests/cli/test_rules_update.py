"""`watchkeeper rules update` end to end: verify, refuse, install atomically, over local copies."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

import watchkeeper.cli  # noqa: F401  (registers the commands)
from watchkeeper.cli.app import app
from watchkeeper.rulesets import default_rule_paths, installed_manifest, sigmahq_rules_path

SUBSET = 120  # enough rules to be a real install, few enough to parse in about a second


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private WATCHKEEPER_HOME."""
    path = tmp_path / "home"
    monkeypatch.setenv("WATCHKEEPER_HOME", str(path))
    return path


@pytest.fixture(scope="session")
def sigma_subset(datasets: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder laid out as SigmaHQ's: `rules/windows/process_creation/` with a subset of its rules."""
    src = datasets / "sigma" / "rules" / "windows" / "process_creation"
    root = tmp_path_factory.mktemp("sigmahq")
    dest = root / "rules" / "windows" / "process_creation"
    dest.mkdir(parents=True)
    for path in sorted(src.glob("*.yml"))[:SUBSET]:
        (dest / path.name).write_bytes(path.read_bytes())
    (root / "LICENSE.Detection.Rules.md").write_text("Detection Rule License 1.1\n")
    return root


def _zip(folder: Path, out: Path, extra: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(folder).as_posix())
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return out


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _installed_files() -> set[str]:
    root = sigmahq_rules_path()
    return {p.relative_to(root).as_posix() for p in root.rglob("*.yml")}


def test_installs_a_zip_with_matching_sha256(home: Path, sigma_subset: Path, tmp_path: Path) -> None:
    archive = _zip(sigma_subset, tmp_path / "sigma_all_rules.zip")
    result = CliRunner().invoke(app, ["rules", "update", str(archive), "--sha256", _sha(archive).upper()])
    assert result.exit_code == 0, result.output
    assert f"Installed {SUBSET} rules" in result.output
    assert len(_installed_files()) == SUBSET
    manifest = installed_manifest()
    assert manifest is not None
    assert (manifest.rules, manifest.failed, manifest.sha256) == (SUBSET, 0, _sha(archive))
    assert (sigmahq_rules_path() / "LICENSE.Detection.Rules.md").is_file()
    assert sigmahq_rules_path() / "rules" in default_rule_paths()


def test_installs_a_folder_and_replaces_the_previous_set(home: Path, sigma_subset: Path, tmp_path: Path) -> None:
    small = tmp_path / "small" / "rules"
    small.mkdir(parents=True)
    first = sorted((sigma_subset / "rules" / "windows" / "process_creation").glob("*.yml"))[0]
    (small / first.name).write_bytes(first.read_bytes())
    assert CliRunner().invoke(app, ["rules", "update", str(small.parent)]).exit_code == 0
    assert _installed_files() == {f"rules/{first.name}"}

    result = CliRunner().invoke(app, ["rules", "update", str(sigma_subset)])
    assert result.exit_code == 0, result.output
    assert len(_installed_files()) == SUBSET
    assert f"rules/{first.name}" not in _installed_files()
    # No staging folder is left behind beside the installed set.
    assert [p.name for p in sigmahq_rules_path().parent.iterdir()] == ["sigmahq"]


def test_wrong_sha256_is_refused_and_the_previous_set_kept(
    home: Path, sigma_subset: Path, tmp_path: Path
) -> None:
    good = _zip(sigma_subset, tmp_path / "good.zip")
    assert CliRunner().invoke(app, ["rules", "update", str(good)]).exit_code == 0
    before = _installed_files()
    manifest_before = (sigmahq_rules_path() / "manifest.json").read_text()

    tampered = _zip(sigma_subset, tmp_path / "tampered.zip", {"rules/evil.yml": b"title: evil\n"})
    result = CliRunner().invoke(app, ["rules", "update", str(tampered), "--sha256", _sha(good)])
    assert result.exit_code == 2
    assert "sha256 mismatch" in result.output
    assert _installed_files() == before
    assert (sigmahq_rules_path() / "manifest.json").read_text() == manifest_before


@pytest.mark.parametrize("member", ["../escaped.yml", "/etc/watchkeeper.yml", "rules/../../escaped.yml",
                                    "C:\\Windows\\evil.yml"])
def test_zip_slip_member_is_refused(home: Path, sigma_subset: Path, tmp_path: Path, member: str) -> None:
    archive = _zip(sigma_subset, tmp_path / "slip.zip", {member: b"title: escaped\n"})
    result = CliRunner().invoke(app, ["rules", "update", str(archive)])
    assert result.exit_code == 2
    assert "outside the target" in result.output
    assert not sigmahq_rules_path().exists()
    assert not (tmp_path / "escaped.yml").exists()
    assert not (home / "escaped.yml").exists()


def test_broken_rules_are_listed_and_left_out(home: Path, sigma_subset: Path, tmp_path: Path) -> None:
    broken = {
        "rules/broken_yaml.yml": b"title: [unclosed\n",
        "rules/broken_condition.yml": (
            b"title: Broken\nlogsource: {product: windows}\n"
            b"detection: {sel: {Image: x}, condition: sel and and}\n"
        ),
    }
    archive = _zip(sigma_subset, tmp_path / "mixed.zip", broken)
    result = CliRunner().invoke(app, ["rules", "update", str(archive)])
    assert result.exit_code == 0, result.output
    assert "rules/broken_yaml.yml" in result.output
    assert "rules/broken_condition.yml" in result.output
    assert "2 files failed to load" in result.output
    assert len(_installed_files()) == SUBSET
    failures = json.loads((sigmahq_rules_path() / "manifest.json").read_text())["failures"]
    assert sorted(f["file"] for f in failures) == ["rules/broken_condition.yml", "rules/broken_yaml.yml"]


def test_nothing_loads_is_refused(home: Path, tmp_path: Path) -> None:
    folder = tmp_path / "junk"
    folder.mkdir()
    (folder / "a.yml").write_text("just: a mapping\n")
    result = CliRunner().invoke(app, ["rules", "update", str(folder)])
    assert result.exit_code == 2
    assert "no rule" in result.output
    assert not sigmahq_rules_path().exists()


def test_sha256_on_a_folder_and_plain_http_are_refused(home: Path, sigma_subset: Path) -> None:
    result = CliRunner().invoke(app, ["rules", "update", str(sigma_subset), "--sha256", "00"])
    assert result.exit_code == 2
    assert "applies to archives" in result.output
    result = CliRunner().invoke(app, ["rules", "update", "http://example.org/sigma.zip"])
    assert result.exit_code == 2
    assert "https" in result.output
