"""Where a study lives: storage URLs and the ``$SPECOPT_HOME`` layout (``home``), opening
SQLite, PostgreSQL and journal storages (``database``, ``journal``), riding out outages
(``resilience``), locks between workers (``locks``), stale trials and their retries (``stale``),
and the artifact store (``artifacts``).  Every use of Optuna's private API is in
``optuna_private``, behind names of our own.  It knows nothing of study definitions or
training."""
