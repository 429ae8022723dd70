"""The one C extension; everything else about the package is in pyproject.toml.

Here rather than in `[tool.setuptools] ext-modules`, which setuptools still calls experimental.
The extension is optional: without a C compiler the install succeeds and the Python reader does
all the work, more slowly (`watchkeeper.sources.flatjson`); CI's tests require it.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "watchkeeper.sources._flatjson",
            sources=["src/watchkeeper/sources/_flatjson.c"],
            extra_compile_args=["-O2"],
            optional=True,
        )
    ]
)
