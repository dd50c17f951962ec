"""Reporting: finished jobs (read through :func:`uvav.jobs.read_jobs`) into tables, plots and curves.

- :mod:`~uvav.reporting.aggregate`: every job under some folders into grouped accuracy and resource tables
  (``python -m uvav.aggregate``), grouping in :mod:`~uvav.reporting.grouping`, Optuna trials in
  :mod:`~uvav.reporting.studies`, tables in :mod:`~uvav.reporting.tables`, plots in :mod:`~uvav.reporting.plots`;
- :mod:`~uvav.reporting.compare` and :mod:`~uvav.reporting.variants`: the method comparison and the variant table
  (``python -m uvav.compare [--variants]``);
- :mod:`~uvav.reporting.robustness`: robustness curves of finished runs (``python -m uvav.robustness``);
- :mod:`~uvav.reporting.formats`: the one mean ± std cell and the Markdown / LaTeX tables.

Method names, their text and their order come from the method registry (:mod:`uvav.methods`), never from here.
"""
