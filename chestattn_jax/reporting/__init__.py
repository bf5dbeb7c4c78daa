"""Every table and figure the outputs hold, built in one place.

- :mod:`.text_tables`: Markdown and CSV tables and the one way a number is written in a
  cell (an AUC with its interval, a paired difference, mean ± sd).
- :mod:`.result_tables`: the paper's Tables 1-2 as ``compare`` and the experiment report
  write them, and an evaluation's per-class table.
- :mod:`.plots`: the PNG figures: ROC curves, attention overlays, Fig. 2 (one builder for
  an evaluation and for ``compare``), Fig. 3 and the report's forest plot.
- :mod:`.html_blocks`: the one HTML page layout and its cells and sortable tables, which
  :mod:`.html_report` (an evaluation's ``report.html``) and :mod:`.html_pages` (``compare``'s
  and the experiment report's) build their pages from.

``compare``, the experiment report, ``--mode=predict`` and the evaluator plug-ins
(:mod:`chestattn_jax.evaluation.evaluators`) gather the numbers and call these.
"""
