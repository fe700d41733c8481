"""Shipped study definitions: ``studies/<name>.toml``, read by ``hpo.load_study_config(name)``."""

from __future__ import annotations

from pathlib import Path

DIR = Path(__file__).parent


def names() -> list[str]:
    """The shipped studies' names."""
    return sorted(p.stem for p in DIR.glob("*.toml"))


def path(name: str) -> Path:
    """The TOML file of a shipped study."""
    return DIR / f"{name}.toml"
