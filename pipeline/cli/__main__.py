"""``python -m pipeline.cli``: the ``pipeline`` command."""

import sys

from pipeline.cli.main import main

sys.exit(main())
