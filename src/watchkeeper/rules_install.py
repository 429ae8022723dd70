"""Install SigmaHQ's release package where `hunt` finds it: verified, then swapped in atomically.

Kept apart from `watchkeeper.rulesets` because it imports pySigma, which a warm hunt never needs.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath, PureWindowsPath

import yaml
from sigma.collection import SigmaCollection
from sigma.exceptions import SigmaError
from sigma.rule import SigmaRule

from watchkeeper.errors import InputError, RuleError, Where
from watchkeeper.rulesets import MANIFEST, sigmahq_rules_path

# --- installing SigmaHQ's release --------------------------------------------------------------

DOWNLOAD_TIMEOUT = 60.0  # seconds without progress before a download is abandoned
MAX_ARCHIVE_BYTES = 256 * 1024 * 1024  # SigmaHQ's full release is ~10 MiB; this is a generous cap
MAX_EXTRACTED_BYTES = 1024 * 1024 * 1024  # guards against decompression bombs
_CHUNK = 1024 * 1024
_SKIPPED_FOLDERS = {"deprecated", "unsupported"}  # kept by SigmaHQ for history, never meant to run
_RULE_SUFFIXES = (".yml", ".yaml")


@dataclass(frozen=True)
class Failure:
    """A rule file that did not load, and why."""

    file: str
    reason: str


@dataclass(frozen=True)
class InstallReport:
    """What `install_sigmahq` installed and what it left out."""

    path: Path
    source: str
    sha256: str | None
    rules: int
    failures: tuple[Failure, ...]


def install_sigmahq(source: str, sha256: str | None = None) -> InstallReport:
    """Verify a SigmaHQ release (URL, archive or folder) and install it atomically as the SigmaHQ set.

    Refused, with the installed set left untouched, when the checksum differs, an archive member
    would land outside the target, or not one rule loads. Rule files that fail to load are left
    out of the installed set and listed in the report and the manifest.
    """
    target = sigmahq_rules_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    # Staging beside the target keeps every rename on one file system, hence atomic.
    staging = Path(tempfile.mkdtemp(prefix=".sigmahq-", dir=target.parent))
    try:
        fetched, digest = _fetch(source, staging)
        if sha256 is not None:
            if digest is None:
                raise InputError("--sha256 applies to archives, not folders", Where(file=source))
            if digest != sha256.strip().lower():
                raise InputError(
                    f"sha256 mismatch: expected {sha256.strip().lower()}, got {digest}",
                    Where(file=source),
                    hint="the archive is corrupt or was tampered with; the installed rules were kept",
                )
        raw = staging / "raw"
        if fetched.is_dir():
            _copy_rules(fetched, raw)
        else:
            _extract(fetched, raw)
        new = staging / "new"
        _lay_out(raw, new)
        count, failures = _verify(new)
        if count == 0:
            raise RuleError(
                f"no rule in {source} loads ({len(failures)} failed)",
                Where(file=source),
                hint="is this a SigmaHQ release package? the installed rules were kept",
            )
        report = InstallReport(target, source, digest, count, tuple(failures))
        _write_manifest(new, report)
        _swap(new, target, staging / "old")
        return report
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _fetch(source: str, staging: Path) -> tuple[Path, str | None]:
    """The local archive or folder behind `source`, and the archive's sha256 (None for a folder)."""
    if source.startswith("https://"):
        return _download(source, staging)
    if "://" in source:
        raise InputError("only https:// URLs are accepted", Where(file=source))
    path = Path(source).expanduser()
    if path.is_dir():
        return path, None
    if not path.is_file():
        raise InputError("no such file or folder", Where(file=source))
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return path, digest.hexdigest()


def _download(url: str, staging: Path) -> tuple[Path, str]:
    """Download `url` into `staging` with a timeout and a size cap, hashing as it arrives."""
    name = Path(urllib.parse.urlparse(url).path).name or "release.zip"
    dest = staging / name
    digest = hashlib.sha256()
    request = urllib.request.Request(url, headers={"User-Agent": "watchkeeper-rules-update"})
    try:
        with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT) as response, dest.open("wb") as out:
            declared = int(response.headers.get("Content-Length") or 0)
            if declared > MAX_ARCHIVE_BYTES:
                raise InputError(f"the archive is {declared} bytes, over the cap", Where(file=url))
            total = 0
            for chunk in iter(lambda: response.read(_CHUNK), b""):
                total += len(chunk)
                if total > MAX_ARCHIVE_BYTES:
                    raise InputError(f"the archive exceeds {MAX_ARCHIVE_BYTES} bytes", Where(file=url))
                digest.update(chunk)
                out.write(chunk)
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise InputError(f"download failed: {exc}", Where(file=url)) from exc
    return dest, digest.hexdigest()


def _safe_member(name: str, origin: str) -> PurePosixPath | None:
    """The relative path of an archive member, None for a folder entry; refuses escaping names."""
    unified = name.replace("\\", "/")
    path = PurePosixPath(unified)
    if unified.startswith("/") or PureWindowsPath(name).drive or ".." in path.parts:
        raise InputError(
            f"archive member {name!r} would be written outside the target",
            Where(file=origin),
            hint="refusing a path-traversal (zip-slip) archive; the installed rules were kept",
        )
    parts = [p for p in path.parts if p not in ("", ".")]
    return PurePosixPath(*parts) if parts else None


def _wanted(rel: PurePosixPath) -> bool:
    return rel.suffix.lower() in _RULE_SUFFIXES or rel.name.upper().startswith("LICENSE")


def _extract(archive: Path, dest: Path) -> None:
    """Extract rule files from a zip or tar archive, checking every member before writing any."""
    origin = str(archive)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            members = [(m, _safe_member(m.filename, origin)) for m in zf.infolist()]
            _check_size(sum(m.file_size for m, _ in members), origin)
            for info, rel in members:
                if rel is None or info.is_dir() or not _wanted(rel):
                    continue
                out = dest.joinpath(*rel.parts)
                out.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, out.open("wb") as dst:
                    shutil.copyfileobj(src, dst, _CHUNK)
        return
    try:
        with tarfile.open(archive, "r:*") as tf:
            tmembers = [(m, _safe_member(m.name, origin)) for m in tf.getmembers()]
            for m, _ in tmembers:
                if m.issym() or m.islnk() or m.isdev():
                    raise InputError(
                        f"archive member {m.name!r} is a link or device",
                        Where(file=origin),
                        hint="rule archives hold plain files only; the installed rules were kept",
                    )
            _check_size(sum(m.size for m, _ in tmembers), origin)
            for tinfo, rel in tmembers:
                if rel is None or not tinfo.isfile() or not _wanted(rel):
                    continue
                out = dest.joinpath(*rel.parts)
                out.parent.mkdir(parents=True, exist_ok=True)
                stream = tf.extractfile(tinfo)
                if stream is None:
                    continue
                with stream, out.open("wb") as dst:
                    shutil.copyfileobj(stream, dst, _CHUNK)
    except tarfile.TarError as exc:
        raise InputError(f"not a zip or tar archive: {exc}", Where(file=origin)) from exc


def _check_size(total: int, origin: str) -> None:
    if total > MAX_EXTRACTED_BYTES:
        raise InputError(f"the archive unpacks to {total} bytes, over the cap", Where(file=origin))


def _copy_rules(folder: Path, dest: Path) -> None:
    """Copy the rule files of a local folder (symbolic links are not followed out of it)."""
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if path.is_symlink() or not path.is_file() or not _wanted(PurePosixPath(*rel.parts)):
            continue
        out = dest / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, out)


def _lay_out(raw: Path, new: Path) -> None:
    """Arrange the extracted tree as SigmaHQ's (`rules/`, `rules-emerging-threats/` …) under `new`."""
    root = _sigmahq_root(raw)
    new.mkdir()
    if root is None:
        # A plain folder of rules (not SigmaHQ's layout) becomes the main `rules` folder.
        if raw.exists():
            raw.rename(new / "rules")
        return
    for child in sorted(root.iterdir()):
        rule_folder = child.is_dir() and child.name.startswith("rules")
        licence = child.is_file() and child.name.upper().startswith("LICENSE")
        if rule_folder or licence:
            child.rename(new / child.name)


def _sigmahq_root(raw: Path) -> Path | None:
    """The folder holding `rules/`: the top, or one level down (GitHub's `sigma-master/`)."""
    if (raw / "rules").is_dir():
        return raw
    if raw.is_dir():
        tops = [p for p in raw.iterdir() if p.is_dir()]
        if len(tops) == 1 and (tops[0] / "rules").is_dir():
            return tops[0]
    return None


def _verify(new: Path) -> tuple[int, list[Failure]]:
    """Parse every rule file with pySigma; drop the ones that fail and return (rules, failures)."""
    count = 0
    failures: list[Failure] = []
    for path in sorted(p for p in new.rglob("*") if p.suffix.lower() in _RULE_SUFFIXES):
        rel = path.relative_to(new).as_posix()
        if _SKIPPED_FOLDERS & set(path.relative_to(new).parts):
            path.unlink()
            continue
        reason, loaded = _load_file(path)
        if reason is None:
            count += loaded
        else:
            failures.append(Failure(rel, reason))
            path.unlink()  # a hunt over the installed set must not trip on it again
    return count, failures


def _load_file(path: Path) -> tuple[str | None, int]:
    """(None, rules in the file) when every rule in it loads, else (the first reason, 0)."""
    try:
        collection = SigmaCollection.from_yaml(
            path.read_text(encoding="utf-8"), collect_errors=True, resolve_references=False
        )
        errors: list[str] = [str(e) for e in collection.errors]
        for rule in collection.rules:
            errors.extend(str(e) for e in rule.errors)
            if isinstance(rule, SigmaRule) and not rule.errors:
                # Conditions are parsed lazily; parse them now so a broken one counts as a failure.
                for cond in rule.detection.parsed_condition:
                    _ = cond.parsed
    except (SigmaError, yaml.YAMLError, UnicodeDecodeError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}".splitlines()[0], 0
    if errors:
        return errors[0].splitlines()[0], 0
    if not collection.rules:
        return "no rule in the file", 0
    return None, len(collection.rules)


def _write_manifest(new: Path, report: InstallReport) -> None:
    manifest = {
        "source": report.source,
        "sha256": report.sha256,
        "rules": report.rules,
        "failed": len(report.failures),
        "failures": [{"file": f.file, "reason": f.reason} for f in report.failures],
        "installed_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    (new / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def _swap(new: Path, target: Path, old: Path) -> None:
    """Put `new` in place of `target`; the previous set moves aside only once `new` is complete."""
    had_previous = target.exists()
    if had_previous:
        target.rename(old)
    try:
        new.rename(target)
    except OSError:
        if had_previous:
            old.rename(target)  # put the previous set back
        raise
