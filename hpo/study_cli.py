"""CLI commands of this package, added to the ``specopt`` app by ``hpo.cli``."""

import typer


def register(app: typer.Typer) -> None:
    pass
