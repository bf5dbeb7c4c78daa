"""The data-source interface: what the rest of the package asks of a data set.

A data set (``config.data.name``) is one :class:`DataSource`, defined once, as ``SOURCE``,
by the module that owns it (:mod:`chestattn_jax.data.synthetic`,
:mod:`chestattn_jax.data.nih`, :mod:`chestattn_jax.data.chexpert`) and listed in the
registry :mod:`chestattn_jax.data.sources`. Nothing else in the package names a data
set: training, evaluation, validation and the prepare command ask the registry.

A data set read from a folder made by ``python -m chestattn_jax.data.prepare`` (the
records of :mod:`chestattn_jax.data.records`) is made by :func:`prepared_source`, which
gives every such data set the same behaviour (the folder ``config.data.data_dir``, the
split schemes, the uncertainty policy); the data set adds its raw-layout reader and the
options of that reader. Adding a data set is one module and one line of the registry.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from typing import Any

from chestattn_jax.config_fields import field
from chestattn_jax.data import splits
from chestattn_jax.files import require_gcs


@dataclasses.dataclass(frozen=True)
class PrepareOption:
    """A flag of ``python -m chestattn_jax.data.prepare`` that one data set's raw reader
    takes (a keyword argument of its ``read_raw`` and of ``prepare``).

    Attributes:
      name: the flag and keyword (e.g. ``nih_views``).
      default: a bool (a ``--[no]NAME`` flag) or a tuple of strings (a comma-separated
        list).
      help: the flag's help.
      recorded: the value as the prepared data set's record (``chestattn_prepare.json``)
        holds it, so that values meaning the same data set compare equal.
    """

    name: str
    default: bool | tuple[str, ...]
    help: str
    recorded: Callable[[Any], Any] = lambda value: value


@dataclasses.dataclass(frozen=True)
class Prepared:
    """How a data set is prepared from its raw layout (:mod:`chestattn_jax.data.prepare`).

    Attributes:
      builder_name: the TFDS builder name, which names the data set's folder
        ``DATA_DIR/<builder_name>/<S>px/<version>`` (:mod:`chestattn_jax.data.records`).
      read_raw: ``(raw_dir, **options) -> list[RawExample]``, every example of the raw
        folder with the data set's full class list (uncertain labels as label 0, mask 0).
      options: the prepare flags that ``read_raw`` takes.
      box_frame: the fixed frame of the raw box coordinates (NIH: 1024), if not the
        image's own.
      exporter: ``"module:attribute"`` of the :class:`chestattn_jax.data.export.Layout`
        that writes phantoms in this raw layout (``python -m chestattn_jax.data.export
        --layout=NAME``), imported when used; ``""`` for none.
    """

    builder_name: str
    read_raw: Callable[..., list]
    options: tuple[PrepareOption, ...] = ()
    box_frame: int | None = None
    exporter: str = ""

    def export(self):
        """The exporter (:class:`chestattn_jax.data.export.Layout`), or None."""
        if not self.exporter:
            return None
        module, _, name = self.exporter.partition(":")
        return getattr(importlib.import_module(module), name)


@dataclasses.dataclass(frozen=True)
class DataSource:
    """One data set (``config.data.name``), as the package sees it.

    Every source that ``open_split`` returns is random-access (``len``, ``source[i]``),
    yields ``{"image": (H, W, 1) uint8, "labels": (k,), "mask": (k,)}`` over
    ``config.data.classes`` and has ``positive_counts()`` and ``labelled_counts()`` (``(k,)``
    positives, and examples whose label is known, per class). A source may also have
    ``attributes()``: ``{"sex", "age", "view"}``, each an ``(N,)`` array of the patient's
    sex (``M``, ``F``; ``''`` unknown), age in years (-1 unknown) and the view position of
    each example, which evaluation records for its subgroup scores
    (:mod:`chestattn_jax.subgroups`).

    Attributes:
      name: the value of ``config.data.name``.
      classes: every class the data set has (``config.data.classes`` picks some, in any
        order).
      open_split: ``(config, split) -> source`` of ``split`` (train, validation, test).
      fingerprint: ``config -> dict``, what data it is, cheaply
        (:func:`chestattn_jax.data.input_pipeline.dataset_fingerprint`).
      select_fold: ``(config.data, fold, num_folds)``: sets ``config.data`` (unlocked) to
        fold ``fold`` of ``num_folds`` disjoint ones, for the experiment's
        cross-validation.
      views: its view positions (``config.data.views`` picks some); None: no view
        selection.
      uncertain_labels: whether some labels are uncertain (``config.data.uncertainty``
        applies).
      settings: the config group that this data set alone reads (``"data.synthetic"``),
        if any; another data set chosen, its fields must keep their defaults.
      prepared: how it is prepared, for a data set read from a prepared folder
        (``config.data.data_dir``); None for one made in memory.
      check_config: ``(p, mode)``: the rules of the values of its own settings, added to
        ``p`` (a :class:`chestattn_jax.config_checks.Problems`) whichever data set is
        chosen, so that a value that cannot work is named even where it is ignored.
      check_chosen: ``(p, source, evaluated)``: the rules that hold when it (``source``)
        is ``config.data.name``, the settings it needs and those it would silently
        ignore; ``evaluated``: the prepared data set of a cross-dataset evaluation
        (``config.eval.dataset``), if any.
    """

    name: str
    classes: tuple[str, ...]
    open_split: Callable[[Any, str], Any]
    fingerprint: Callable[[Any], dict]
    select_fold: Callable[[Any, int, int], None]
    views: tuple[str, ...] | None = None
    uncertain_labels: bool = False
    settings: str | None = None
    prepared: Prepared | None = None
    check_config: Callable[[Any, str], None] | None = None
    check_chosen: Callable[[Any, DataSource, DataSource | None], None] | None = None

    def setting_fields(self, config) -> tuple[str, ...]:
        """The config fields (``data.synthetic.*``) that identify the data set beyond
        those every data set has: all of its own settings group, read from the config
        itself (a new field is covered without a change here); () for a prepared data
        set, which its fingerprint identifies."""
        if self.settings is None:
            return ()
        return tuple(f"{self.settings}.{k}" for k in field(config, self.settings))

    def fingerprint_fields(self, config) -> tuple[str, ...]:
        """The config fields a changed fingerprint is explained by, where one of them
        changed too: a data set made in memory hashes its image size and its own settings;
        () for a prepared one, whose fingerprint hashes raw inputs that no field names."""
        if self.prepared is not None:
            return ()
        return ("data.image_size", *self.setting_fields(config))


def prepared_source(
    name: str,
    classes: tuple[str, ...],
    prepared: Prepared,
    *,
    views: tuple[str, ...] | None = None,
    uncertain_labels: bool = False,
    check_config: Callable[[Any, str], None] | None = None,
) -> DataSource:
    """A data set read from a folder that ``python -m chestattn_jax.data.prepare`` made
    (``config.data.data_dir``): what every such data set does, and its own parts."""
    return DataSource(
        name=name,
        classes=tuple(classes),
        open_split=_open_prepared_split,
        fingerprint=_prepared_fingerprint,
        select_fold=_select_prepared_fold,
        views=views,
        uncertain_labels=uncertain_labels,
        prepared=prepared,
        check_config=check_config,
        check_chosen=_check_prepared,
    )


def _open_prepared_split(config, split: str):
    require_gcs(config.data.data_dir, "config.data.data_dir")
    from chestattn_jax.data.record_reader import open_split  # TFDS only for real data

    return open_split(config, split)


def _prepared_fingerprint(config) -> dict:
    d = config.data
    require_gcs(d.data_dir, "config.data.data_dir")
    from chestattn_jax.data.record_reader import provenance  # TFDS only for real data

    return provenance(d.name, d.data_dir, int(d.image_size))


def _select_prepared_fold(data, fold: int, num_folds: int) -> None:
    # Folds by patient over the whole data set.
    data.split = "kfold"
    data.num_folds = num_folds
    data.fold = fold


def _check_prepared(p, source: DataSource, evaluated: DataSource | None) -> None:
    """The rules of a prepared data set as ``config.data.name``: its folder is given, and
    the settings it would silently ignore keep their defaults."""
    name = source.name
    if p.value("data.mixture"):  # the mixture's rules (chestattn_jax.data.mixture)
        split, each = p.value("data.split"), p.value("data.mixture_splits")
        if isinstance(split, str) and split in splits.SCHEMES and not each:
            splits.check_scheme_fields(p, split)
        return
    if not p.value("data.data_dir"):
        p.add(
            "data.data_dir",
            f"not set: config.data.name={name!r} reads a prepared "
            f"data set; give its folder with --config.data.data_dir=DIR (made by python -m "
            f"chestattn_jax.data.prepare --dataset={name} ...).",
        )
    elif not isinstance(p.value("data.data_dir"), str):
        p.add("data.data_dir", "must be a folder name.")
    if not source.uncertain_labels and not (evaluated and evaluated.uncertain_labels):
        for f in ("uncertainty", "uncertainty_per_class"):
            p.ignored(f"data.{f}", f"has no effect on {name}, whose labels are never uncertain")
    split = p.value("data.split")
    if isinstance(split, str) and split in splits.SCHEMES:
        splits.check_scheme_fields(p, split)
