"""Running a study: the Optuna objective that trains one trial (``objective``), the worker loop
around it (``worker``; ``packed``: several trials trained at once), local worker processes
(``launch``) and cluster jobs on SLURM or Ray (``cluster``); ``log``: one log format for our
lines and Optuna's, in the command and the workers it starts."""
