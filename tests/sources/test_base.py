"""The source registry: a class that names itself registers; a subclass inheriting a name does not."""

from __future__ import annotations

from watchkeeper.sources import load_all
from watchkeeper.sources.base import Source
from watchkeeper.sources.cloudtrail import CloudTrail


def test_subclass_inheriting_a_name_does_not_replace_the_source() -> None:
    class Tweaked(CloudTrail):
        max_bytes = 10

    assert load_all()["aws.cloudtrail"] is CloudTrail
    assert Tweaked not in Source.registry.values()


def test_a_class_naming_itself_registers() -> None:
    class Extra(Source):
        name = "test.extra"

    try:
        assert load_all()["test.extra"] is Extra
    finally:
        del Source.registry["test.extra"]
