"""``python -m hpo.cli worker STUDY ...``: the ``specopt`` command without its script (what
``specopt launch`` starts its workers with)."""

import logging
import os

os.environ.setdefault("PYTHONUNBUFFERED", "1")

from hpo.cli import app  # noqa: E402 - after the environment is set

try:
    app(prog_name="specopt")
finally:
    logging.shutdown()
