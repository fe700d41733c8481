"""optuna-dashboard on a study's storage (``specopt dashboard``): the trials with their metrics
(user attributes) and artifacts, in a browser."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

__all__ = ["dashboard_url", "serve_dashboard"]


def dashboard_url(host: str, port: int, study_id: int | None = None) -> str:
    """The dashboard's address (an IPv6 host in brackets), of one study when ``study_id``."""
    shown = f"[{host}]" if ":" in host else host
    base = f"http://{shown}:{port}/dashboard"
    return f"{base}/studies/{study_id}" if study_id is not None else base


def serve_dashboard(storage: Any, *, host: str = "127.0.0.1", port: int = 8080,
                    artifact_store: Any = None, study_id: int | None = None,
                    echo: Callable[[str], object] = print) -> None:
    """optuna-dashboard on ``storage`` until interrupted. Binds first, then prints the URL (so
    ``port=0`` picks a free port and the printed URL has it)."""
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    from optuna_dashboard import wsgi

    class ThreadedServer(ThreadingMixIn, WSGIServer):  # as optuna-dashboard's own command
        daemon_threads = True

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, format, *args):  # "format": the base class's parameter name
            pass

    app = wsgi(storage, artifact_store=artifact_store)
    with make_server(host, port, app, server_class=ThreadedServer,
                     handler_class=QuietHandler) as server:
        actual = server.server_address[1]
        echo(f"optuna-dashboard: {dashboard_url(host, actual, study_id)}")
        echo("(Ctrl-C stops it)")
        sys.stdout.flush()
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
