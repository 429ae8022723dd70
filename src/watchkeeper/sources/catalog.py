"""The catalogue of sources and the Sigma logsources they answer, for `watchkeeper sources` and docs."""

from __future__ import annotations

from watchkeeper.sources.base import Source


def logsource_rows(registry: dict[str, type[Source]]) -> list[tuple[str, str, str, str, str, str]]:
    """(product, category, service, source, conditions, renames) for every mapping of every source."""
    rows = []
    for name, source in sorted(registry.items()):
        for m in source.logsources:
            conditions = "; ".join(f"{k} in {', '.join(v)}" for k, v in sorted(m.conditions.items()))
            renames = "; ".join(f"{k} ← {v}" for k, v in sorted(m.renames.items()))
            rows.append((m.product or "", m.category or "", m.service or "", name, conditions, renames))
    return sorted(rows)


def markdown(registry: dict[str, type[Source]]) -> str:
    """The logsource table as Markdown (docs/logsources.md is this, generated and tested)."""
    lines = [
        "# Sigma logsources and the sources that answer them",
        "",
        "Generated from the source registry (`watchkeeper sources --format markdown`); a test keeps it current.",
        "A rule runs on the events of every source listed for its logsource, restricted by the conditions;",
        "`renames` read a rule's field (left) from the event column (right).",
        "",
        "| product | category | service | source | conditions | renames |",
        "|---|---|---|---|---|---|",
    ]
    for row in logsource_rows(registry):
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
    return "\n".join(lines) + "\n"
