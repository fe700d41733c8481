"""Watching and tending studies: ``status`` (where a study stands, with an ETA), ``lifecycle``
(list, extend, delete) and ``dashboard`` (optuna-dashboard on a study's storage)."""
