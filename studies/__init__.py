"""Shipped study definitions: ``studies/<name>.toml``, read by ``hpo.load_study_config(name)``
(``hpo.study.config`` lists and finds them here)."""

from __future__ import annotations

from pathlib import Path

#: The folder of the shipped study files.
DIR = Path(__file__).parent
