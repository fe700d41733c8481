"""Progress bars (tqdm) of long work: data preparation and ``model.train``.

Every function that shows one takes ``progress: bool | None``: True shows it, False hides it,
None (the default) follows :func:`set_default` (the ``specopt -q`` switch), else
``$SPECOPT_PROGRESS`` (``0``/``1``: how ``specopt launch`` passes ``-q`` on to its workers),
else shows it only when stderr is a terminal (tqdm's own rule: no bars in log files).
"""

from __future__ import annotations

import os
from typing import Any

#: ``0`` hides every bar, ``1`` shows them even when stderr is not a terminal.
PROGRESS_ENV = "SPECOPT_PROGRESS"

_default: bool | None = None


def set_default(progress: bool | None) -> None:
    """What ``progress=None`` means in this process (None: ``$SPECOPT_PROGRESS``, else a
    terminal)."""
    global _default
    _default = progress


def enabled(progress: bool | None = None) -> bool | None:
    """``progress`` resolved: True, False, or None (tqdm decides: on only on a terminal)."""
    if progress is not None:
        return progress
    if _default is not None:
        return _default
    env = os.environ.get(PROGRESS_ENV, "").strip().lower()
    if env in ("0", "false", "no", "off"):
        return False
    if env in ("1", "true", "yes", "on"):
        return True
    return None


def bar(progress: bool | None = None, **kwargs: Any):
    """A tqdm bar (``kwargs`` are tqdm's), shown as :func:`enabled` says."""
    from tqdm import tqdm

    shown = enabled(progress)
    return tqdm(disable=None if shown is None else not shown, dynamic_ncols=True, **kwargs)
