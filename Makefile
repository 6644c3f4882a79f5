# Two-command quick start: `make demo` and `make test` (see README).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test lint clean browser

# setup.py builds the optional native extensions: BPE merge loop and encoder (tokenizer/_bpe.c,
# _encode.c), line-dedup hashing, MinHash signatures and exact-dedup keys (pipeline/dedup/_lines.c,
# _minhash.c, _exact.c).
$(STAMP): pyproject.toml setup.py tokenizer/_bpe.c tokenizer/_encode.c pipeline/dedup/_lines.c \
		pipeline/dedup/_minhash.c pipeline/dedup/_exact.c pipeline/dedup/_exact_tables.h \
		pipeline/dedup/_blake2b.h pipeline/dedup/_utf8.h pipeline/dedup/_bytes.h
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU wheel on disk; an unpinned torch would pull several GB of CUDA packages.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/pipeline run jobs/crawl.yaml

# The report test renders report.html in a real headless Chromium (Debian's package); as
# root with apt-get, install it once (about 2 min, ~100 MB download); else the test skips.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
	  >/dev/null) || echo "warning: chromium not installed; the report browser test will skip"; }

# Two workers (pytest-xdist), each module's tests on one worker so module fixtures are built once.
test: $(STAMP) browser
	$(PY) -m pytest -q -n 2 --dist loadfile tests

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf out .pytest_cache
