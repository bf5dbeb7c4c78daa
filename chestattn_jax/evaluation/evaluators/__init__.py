"""Evaluator plug-ins: what evaluation computes from its one pass over a split.

Each module here holds one ``Evaluator`` (a subclass of :class:`Evaluator`), and
``config.eval.evaluators`` names the modules to run, in order. An evaluator sees the
pass twice:

- ``add(maps, rows)``, once per global batch while the model runs, if it set
  ``needs_maps`` (the gate-3 maps are then computed, and streamed: nothing keeps them
  unless an evaluator does) or ``needs_rows`` (the batch's rows, with the maps where
  some evaluator asked for them and ``None`` where none did, as for the resnet
  variant);
- ``finish(record, metrics)``, once after the pass, with the :class:`Record` of the
  whole split: it adds its numbers to ``metrics`` (written as ``metrics.json``) and
  writes its files into ``ctx.out_dir``, whose names it lists in ``outputs``.

Adding a metric is adding a module: ``my_metric.py`` with ``class Evaluator(Evaluator)``
runs with ``--config.eval.evaluators="('auc','my_metric','tables')"``. An evaluator
reads what the ones before it added to ``metrics`` (``tables`` tabulates them).

An evaluator's options are ``config.eval`` fields (``bootstrap_draws`` for ``auc``,
``map_threshold`` for ``localization``, ``num_figure_images`` for ``figures``,
``num_failure_images`` for ``failures``): a new one
gets its default in :func:`chestattn_jax.config.get_base_config` and its rule in the
evaluator's ``check_config``, which validation calls before any run starts.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import pkgutil

from chestattn_jax import workdir as workdir_lib
from chestattn_jax.evaluation.inference_pass import Record


@dataclasses.dataclass
class Context:
    """What an evaluator may read besides the record.

    ``source``: the evaluated split (``truth(i)`` where it has localisation truth);
    ``train_source()``: the training split of the same data set, opened on first use;
    ``classes`` / ``evaluated_as``: each record column's name for the model and for the
    evaluated data set (they differ only across data sets)."""

    config: object
    out_dir: str
    source: object
    open_train_source: object  # () -> the training split's source
    classes: tuple[str, ...]
    evaluated_as: tuple[str, ...]
    # The evaluated data set's validation split, scored by the same model in a pass of its
    # own, where a chosen evaluator ``needs_validation`` (set before ``finish``).
    validation: Record | None = None

    @functools.cached_property
    def train_source(self):
        return self.open_train_source()

    @property
    def writes(self) -> bool:
        """Whether this process writes files (:func:`chestattn_jax.workdir.writes_files`)."""
        return workdir_lib.writes_files()


class Evaluator:
    """The interface. Override ``finish``; set ``needs_maps`` and override ``add`` to
    see the gate-3 maps as the pass runs, or ``needs_rows`` to see each batch's rows
    (images included) whether or not the model has maps."""

    needs_maps = False
    # Whether add() sees every batch even without maps (then ``maps`` is None, unless
    # another chosen evaluator needs_maps). Without it or needs_maps, add() is not called.
    needs_rows = False
    # Whether finish() reads ctx.validation: what is chosen on data (thresholds,
    # recalibration) is chosen on the validation split, never on the split it is tested on.
    needs_validation = False
    # Evaluators whose metrics this one reads in finish(): run first when also chosen.
    after: tuple[str, ...] = ()
    # The files finish() may write into ctx.out_dir: an evaluation without this evaluator
    # removes them, so that a folder never shows another evaluation's files.
    outputs: tuple[str, ...] = ()
    # Evaluators this one cannot go without, each with why: (("auc", "tables tabulates the
    # AUCs"),). A config that chooses this one without them is refused.
    requires: tuple[tuple[str, str], ...] = ()

    @staticmethod
    def check_config(p, mode: str) -> None:
        """The rules of this evaluator's own options (``config.eval.<option>``), added to
        ``p`` (a :class:`chestattn_jax.config_checks.Problems`). Checked whether or not
        the evaluator is chosen: every field of a config holds a usable value."""

    def __init__(self, ctx: Context):
        self.ctx = ctx

    def add(self, maps, rows) -> None:
        """One global batch: ``maps`` ``(B, k, h, w)`` (class-based), ``(B, h, w)``
        (image-based) or None (no chosen evaluator needs_maps), and host arrays
        ``image``, ``labels``, ``mask``, ``probs`` (the model's probabilities of the
        record's columns), ``valid`` (False on padding rows) and ``index`` (the row's
        source index)."""

    def finish(self, record: Record, metrics: dict) -> None:
        raise NotImplementedError


def available() -> tuple[str, ...]:
    """The evaluator modules of this package."""
    return tuple(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def known_outputs() -> frozenset[str]:
    """The files any evaluator of this package may write (their ``outputs``)."""
    return frozenset(
        name
        for module in available()
        for name in importlib.import_module(f"{__name__}.{module}").Evaluator.outputs
    )


def create(names, ctx: Context) -> list[Evaluator]:
    """The evaluators ``names`` (``config.eval.evaluators``), in that order except that
    each comes after those it reads (its ``after``)."""
    classes = {n: importlib.import_module(f"{__name__}.{n}").Evaluator for n in names}
    ordered = []

    def place(name):
        if name not in ordered:
            for first in classes[name].after:
                if first in classes:
                    place(first)
            ordered.append(name)

    for name in names:
        place(name)
    return [classes[name](ctx) for name in ordered]


def check_config(p, mode: str) -> None:
    """The rules of ``config.eval.evaluators`` and each evaluator's own (its
    ``Evaluator.check_config`` and ``requires``), added to ``p`` (a
    :class:`chestattn_jax.config_checks.Problems`)."""
    known = available()
    plugins = {n: importlib.import_module(f"{__name__}.{n}").Evaluator for n in known}
    for plugin in plugins.values():
        plugin.check_config(p, mode)
    names = p.value("eval.evaluators")
    if not isinstance(names, list | tuple) or not all(isinstance(n, str) for n in names):
        p.add(
            "eval.evaluators",
            f"must be a tuple of evaluator names from {', '.join(known)}, e.g. "
            "--config.eval.evaluators=\"('auc','tables')\".",
        )
        return
    unknown = [n for n in names if n not in known]
    if not names:
        p.add(
            "eval.evaluators",
            "is empty: an evaluation must compute something (its metrics.json would hold no "
            "AUC, and an experiment would count the cell as done). Name at least one, e.g. "
            "--config.eval.evaluators=\"('auc',)\".",
        )
    elif unknown:
        p.add(
            "eval.evaluators",
            f"no evaluator {', '.join(map(repr, unknown))}; expected names from "
            f"{', '.join(known)}.",
        )
    elif len(set(names)) < len(names):
        p.add("eval.evaluators", "names an evaluator more than once.")
    else:
        for name in names:
            for needed, why in plugins[name].requires:
                if needed not in names:
                    p.add("eval.evaluators", f"{why}: add {needed}, or leave {name} out.")
