"""The logsource table in the docs is generated from the registry and must stay current."""

from __future__ import annotations

from tests.conftest import ROOT
from watchkeeper.sources import load_all
from watchkeeper.sources.catalog import logsource_rows, markdown


def test_docs_logsource_table_is_current() -> None:
    assert (ROOT / "docs" / "logsources.md").read_text(encoding="utf-8") == markdown(load_all()), (
        "regenerate with: watchkeeper sources --format markdown > docs/logsources.md"
    )


def test_every_source_answers_some_logsource_except_mapped() -> None:
    registry = load_all()
    answering = {row[3] for row in logsource_rows(registry)}
    assert set(registry) - answering <= {"mapped"}
