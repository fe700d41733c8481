"""Fault injection points for tests: ``inject("name")`` kills the process at that point.

When the environment variable ``SPECOPT_FAULT`` equals ``name`` (or ``name:SIGNAL``, e.g.
``after_ask:SIGTERM``), :func:`inject` sends that signal (default SIGKILL) to this process;
otherwise it does nothing.  The one mechanism of the project: product code calls
``hpo.faults.inject("after_ask")`` at the exact point a test needs to kill it.
"""

from __future__ import annotations

import os
import signal


def inject(name: str) -> None:
    """Kill this process with the signal named by ``SPECOPT_FAULT`` when it names ``name``."""
    fault = os.environ.get("SPECOPT_FAULT", "")
    point, _, sig = fault.partition(":")
    if point == name:
        os.kill(os.getpid(), getattr(signal, sig or "SIGKILL"))
