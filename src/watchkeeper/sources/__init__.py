"""Log sources: one module per format, each registering itself by subclassing `Source`.

Importing this package imports every module in it, so a new format is one new file here.
"""

from __future__ import annotations

import importlib
import pkgutil

from watchkeeper.sources.base import LogSourceMapping, Source

__all__ = ["LogSourceMapping", "Source", "load_all"]


_loaded = False


def load_all() -> dict[str, type[Source]]:
    """Import every source module of this package (once) and return the registry (name -> class)."""
    global _loaded
    if not _loaded:
        for info in pkgutil.iter_modules(__path__):
            importlib.import_module(f"{__name__}.{info.name}")
        _loaded = True
    return dict(Source.registry)
