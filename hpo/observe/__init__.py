"""Watching and tending studies: ``status`` (where a study stands, with an ETA), ``lifecycle``
(list, extend, delete), ``log`` (one log format for our lines and Optuna's) and ``dashboard``
(optuna-dashboard on a study's storage)."""
