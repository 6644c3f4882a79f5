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
        # line dedup's normaliser + hasher; pipeline.dedup.lines falls back to Python
        Extension(
            "pipeline.dedup._lines",
            sources=["pipeline/dedup/_lines.c"],
            depends=["pipeline/dedup/_blake2b.h", "pipeline/dedup/_utf8.h",
                     "pipeline/dedup/_bytes.h"],
            extra_compile_args=["-O2"],
            optional=True,
        ),
        # exact-dedup keys over Arrow text columns; pipeline.dedup.text falls back to Python
        Extension(
            "pipeline.dedup._exact",
            sources=["pipeline/dedup/_exact.c"],
            depends=["pipeline/dedup/_blake2b.h", "pipeline/dedup/_exact_tables.h",
                     "pipeline/dedup/_utf8.h", "pipeline/dedup/_bytes.h"],
            extra_compile_args=["-O3"],
            optional=True,
        ),
        # MinHash signatures in one pass; pipeline.dedup.minhash falls back to numpy
        Extension(
            "pipeline.dedup._minhash",
            sources=["pipeline/dedup/_minhash.c"],
            extra_compile_args=["-O3"],
            optional=True,
        ),
    ]
)
