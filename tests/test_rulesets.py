"""Where rule sets live, and installing SigmaHQ's release from tar archives and nested layouts."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from watchkeeper.errors import ConfigError, InputError
from watchkeeper.rules_install import install_sigmahq
from watchkeeper.rulesets import (
    bundled_rules_path,
    default_rule_paths,
    installed_manifest,
    sigmahq_rules_path,
    watchkeeper_home,
)

RULE = b"""title: Test Rule {n}
id: 5b0c3f5e-0000-4000-8000-00000000000{n}
status: experimental
logsource: {{product: windows, category: process_creation}}
detection: {{sel: {{Image|endswith: '\\\\vssadmin.exe'}}, condition: sel}}
level: high
"""


def _rule(n: int) -> bytes:
    return RULE.replace(b"{n}", str(n).encode()).replace(b"{{", b"{").replace(b"}}", b"}")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private WATCHKEEPER_HOME."""
    path = tmp_path / "home"
    monkeypatch.setenv("WATCHKEEPER_HOME", str(path))
    return path


def _tar(out: Path, members: dict[str, bytes], symlink: str | None = None) -> Path:
    with tarfile.open(out, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        if symlink:
            link = tarfile.TarInfo(symlink)
            link.type = tarfile.SYMTYPE
            link.linkname = "/etc/passwd"
            tf.addfile(link)
    return out


def test_home_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHKEEPER_HOME", str(tmp_path / "wk"))
    assert watchkeeper_home() == tmp_path / "wk"
    assert sigmahq_rules_path() == tmp_path / "wk" / "rules" / "sigmahq"
    monkeypatch.delenv("WATCHKEEPER_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert watchkeeper_home() == tmp_path / "xdg" / "watchkeeper"


def test_default_paths_are_the_bundled_set_until_sigmahq_is_installed(home: Path) -> None:
    bundled = bundled_rules_path()
    assert len(list(bundled.rglob("*.yml"))) >= 12
    assert default_rule_paths() == [bundled]
    assert installed_manifest() is None
    (sigmahq_rules_path() / "rules").mkdir(parents=True)
    (sigmahq_rules_path() / "rules-threat-hunting").mkdir()
    assert default_rule_paths() == [bundled, sigmahq_rules_path() / "rules"]


def test_corrupt_manifest_is_a_config_error(home: Path) -> None:
    sigmahq_rules_path().mkdir(parents=True)
    (sigmahq_rules_path() / "manifest.json").write_text("{not json")
    with pytest.raises(ConfigError, match="manifest"):
        installed_manifest()


def test_tar_gz_with_github_style_top_folder(home: Path, tmp_path: Path) -> None:
    archive = _tar(
        tmp_path / "sigma.tar.gz",
        {
            "sigma-master/rules/windows/a.yml": _rule(1),
            "sigma-master/rules-emerging-threats/b.yml": _rule(2),
            "sigma-master/deprecated/windows/c.yml": _rule(3),
            "sigma-master/tests/test_rules.py": b"print('not a rule')\n",
        },
    )
    report = install_sigmahq(str(archive))
    assert report.rules == 2
    assert report.failures == ()
    installed = sorted(p.relative_to(sigmahq_rules_path()).as_posix() for p in sigmahq_rules_path().rglob("*"))
    assert installed == [
        "manifest.json",
        "rules",
        "rules-emerging-threats",
        "rules-emerging-threats/b.yml",
        "rules/windows",
        "rules/windows/a.yml",
    ]
    manifest = installed_manifest()
    assert manifest is not None
    assert (manifest.rules, manifest.source, manifest.sha256) == (2, str(archive), report.sha256)


def test_tar_with_a_symlink_is_refused(home: Path, tmp_path: Path) -> None:
    archive = _tar(tmp_path / "link.tar.gz", {"rules/a.yml": _rule(1)}, symlink="rules/passwd.yml")
    with pytest.raises(InputError, match="link"):
        install_sigmahq(str(archive))
    assert not sigmahq_rules_path().exists()


def test_tar_slip_is_refused(home: Path, tmp_path: Path) -> None:
    archive = _tar(tmp_path / "slip.tar.gz", {"rules/a.yml": _rule(1), "rules/../../x.yml": _rule(2)})
    with pytest.raises(InputError, match="outside the target"):
        install_sigmahq(str(archive))
    assert not (tmp_path / "x.yml").exists()


def test_not_an_archive_is_refused(home: Path, tmp_path: Path) -> None:
    bogus = tmp_path / "rules.zip"
    bogus.write_bytes(b"this is not an archive")
    with pytest.raises(InputError, match="not a zip or tar"):
        install_sigmahq(str(bogus))
    with pytest.raises(InputError, match="no such file"):
        install_sigmahq(str(tmp_path / "missing.zip"))
