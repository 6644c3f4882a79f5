"""Build hook for the optional native BPE merge loop and encoder (all other metadata is in
pyproject.toml).

Both extensions are optional: if one fails to compile, installation still succeeds, and
`tokenizer.merges` falls back to its pure-Python merge loop, `tokenizer.fast` to tiktoken.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "tokenizer._bpe",
            sources=["tokenizer/_bpe.c"],
            extra_compile_args=["-O2"],
            optional=True,
        ),
        Extension(
            "tokenizer._encode",
            sources=["tokenizer/_encode.c"],
            extra_compile_args=["-O2"],
            optional=True,
        ),
    ]
)
