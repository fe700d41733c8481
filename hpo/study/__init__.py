"""What a study searches: its definition read from a TOML file (``config``: ``StudyConfig``,
the search space, samplers and pruners), our own pruners (``pruners``), its trial budget
(``budget``), and creating, joining or opening the Optuna study in a storage (``create``)."""
