"""Reports of a study, and files to share its results.

Python API (the ``specopt report``, ``export-best`` and ``predict`` commands are thin layers)::

    from hpo.report import write_report, export_best, best_trial_table, default_out_dir
    from hpo.study.create import open_study
    opened = open_study("demo")                    # an existing study, with its artifact store
    write_report(opened.study, default_out_dir("demo", "report"), opened.artifact_store)

- ``write_report(study, out_dir, artifact_store=None) -> ReportPaths``: the report's tables
  (Markdown, CSV) and a self-contained HTML page with the figures.
- ``best_trial_table(study) -> str``: the best trial's numbers as a small Markdown table;
  ``study_message(study)``: why a study has nothing to report (None when it has).
- ``export_best(study, out_dir, artifact_store=None) -> ExportPaths``: the best trial's
  settings, metrics, checkpoint and validation predictions, and the report.
- ``default_out_dir(study_name, suffix)``: ``$SPECOPT_HOME/<study>/<suffix>`` (see
  :mod:`hpo.storage.home`), refusing a study name that would lead outside the home;
  ``inside(folder, name)``: the same check for any name read from a study.
- ``predict_xyz(checkpoint, xyz_files, out_dir, force=False, *, sigma=None, n_points=None)
  -> PredictPaths``: spectra of new molecules (at another sigma / Np: levels-first models
  only) as CSVs and an offline plot; molecules outside the model's training domain are
  refused (``model.inference.OutOfDomain``) or, with ``force``, predicted and flagged.
- ``mlflow_export.export_mlflow(study, store)``: every finished trial as an MLflow run.

Modules, one concern each: ``data`` (what is read from a study: settings, metrics, artifacts,
predictions), ``tables``, ``figures``, ``page`` (HTML rendering), ``write`` (the report),
``export`` and ``predict`` (files to share).
"""

from hpo.report.export import ExportPaths, export_best
from hpo.report.predict import PredictPaths, predict_xyz
from hpo.report.write import (
    ReportPaths,
    best_trial_table,
    default_out_dir,
    inside,
    study_message,
    write_report,
)
from model.errors import ReportError

__all__ = [
    "ExportPaths", "PredictPaths", "ReportError", "ReportPaths", "best_trial_table",
    "default_out_dir", "export_best", "inside", "predict_xyz", "study_message", "write_report",
]
