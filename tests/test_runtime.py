"""configure_process: one BLAS thread, freed memory kept for reuse, the user's own settings left alone."""

from __future__ import annotations

import os
import platform
from collections.abc import Iterator

import pyarrow as pa
import pytest

from watchkeeper.runtime import configure_process

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")


@pytest.fixture(autouse=True)
def _restore_pool() -> Iterator[None]:
    pool = pa.default_memory_pool()
    yield
    pa.set_memory_pool(pool)


@glibc
def test_arrow_allocates_from_glibc_once_glibc_keeps_freed_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GLIBC_TUNABLES", "ARROW_DEFAULT_MEMORY_POOL", "OPENBLAS_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    configure_process()
    assert pa.default_memory_pool().backend_name == "system"
    assert os.environ["OPENBLAS_NUM_THREADS"] == "1"


@glibc
@pytest.mark.parametrize(
    ("variable", "value"),
    [("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=1"), ("ARROW_DEFAULT_MEMORY_POOL", "mimalloc")],
)
def test_the_users_memory_settings_win(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    monkeypatch.delenv("ARROW_DEFAULT_MEMORY_POOL", raising=False)
    monkeypatch.setenv(variable, value)
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "4")
    before = pa.default_memory_pool().backend_name
    configure_process()
    assert pa.default_memory_pool().backend_name == before
    assert os.environ["OPENBLAS_NUM_THREADS"] == "4"
