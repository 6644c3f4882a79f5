"""Build hook for the optional native BPE merge loop (all other metadata is in pyproject.toml).

The extension is optional: if it fails to compile, installation still succeeds and
`tokenizer.merges` falls back to its pure-Python merge loop.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "tokenizer._bpe",
            sources=["tokenizer/_bpe.c"],
            extra_compile_args=["-O2"],
            optional=True,
        )
    ]
)
