"""The C extensions; everything else about the package is in pyproject.toml.

Here rather than in `[tool.setuptools] ext-modules`, which setuptools still calls experimental.
Both are optional: without a C compiler the install succeeds and Python does their work, more
slowly (`watchkeeper.sources.flatjson`, `watchkeeper.lake.writer.md5_hex`); CI's tests require them.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "watchkeeper.sources._flatjson",
            sources=["src/watchkeeper/sources/_flatjson.c"],
            extra_compile_args=["-O2"],
            optional=True,
        ),
        Extension(
            "watchkeeper.lake._eventid",
            sources=["src/watchkeeper/lake/_eventid.c"],
            extra_compile_args=["-O2"],
            optional=True,
        ),
    ]
)
