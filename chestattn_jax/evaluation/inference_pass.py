"""The one inference pass over a split, and the record it leaves.

:func:`run_pass` runs the model once over every example of a source. It returns a
:class:`Record` (probabilities, labels, masks, patient and example ids, and the loss)
and hands the gate-3 maps, one global batch at a time, to whoever asks for them
(``on_batch``), so that no map outlives its batch. Memory is the record's: for NIH's
25,596-image test list and 14 classes, probabilities (float64), labels and masks
(int32) take 25,596 x 14 x 16 bytes = 5.7 MB; the maps of a batch of 64 at 224 px
(14 x 14 cells, 14 classes) are 0.7 MB, and what the evaluators keep of them is
bounded by the class count and ``config.eval.num_figure_images``
(:mod:`chestattn_jax.evaluation.evaluators`).

``WORKDIR/eval/predictions.npz`` is the record on disk (:meth:`Record.save`);
``chestattn_jax.compare`` reads it back with :meth:`Record.load`.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from chestattn_jax import files
from chestattn_jax import sharding as shd
from chestattn_jax.config_fields import not_this_version
from chestattn_jax.data.input_pipeline import eval_batches

# predictions.npz holds attribute NAME as the array ``attribute_NAME``.
ATTRIBUTE_PREFIX = "attribute_"


@dataclasses.dataclass
class Record:
    """One pass over a split, rows in the source's order.

    ``classes`` names each column as the model knows it; ``evaluated_as`` as the
    evaluated data set does (the same names, except in a cross-dataset evaluation,
    where the class map pairs them: :mod:`chestattn_jax.evaluation.class_map`).
    ``attributes``: the source's per-example patient attributes (``{"sex": (N,) str,
    "age": (N,) int, "view": (N,) str}``, :class:`chestattn_jax.data.source.DataSource`),
    empty where the source has none or the record was saved by an earlier release.
    """

    probs: np.ndarray  # (N, k) float64
    labels: np.ndarray  # (N, k)
    mask: np.ndarray  # (N, k); 0 where a label is unknown (not scored)
    patient_ids: np.ndarray  # (N,) str; the bootstrap resamples patients
    example_ids: np.ndarray  # (N,) str; the raw data set's name of each image
    classes: tuple[str, ...]
    evaluated_as: tuple[str, ...]
    loss: float = float("nan")  # mean Eq. 5 loss per example
    bce: float = float("nan")  # its classification part (the loss without -λH)
    attributes: dict = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)

    def save(self, path) -> None:
        """``np.savez`` to a local or ``gs://`` path."""
        files.write_npz(
            path,
            probs=self.probs,
            labels=self.labels,
            mask=self.mask,
            patient_ids=np.asarray(self.patient_ids, dtype=str),
            example_ids=np.asarray(self.example_ids, dtype=str),
            classes=np.asarray(self.classes),
            evaluated_as=np.asarray(self.evaluated_as),
            loss=np.float64(self.loss),
            bce=np.float64(self.bce),
            **{ATTRIBUTE_PREFIX + k: np.asarray(v) for k, v in self.attributes.items()},
        )

    @classmethod
    def load(cls, path) -> Record:
        """The record at ``path``; a ``ValueError`` names the arrays it lacks. A record
        saved without attributes (by an earlier release) loads with none."""
        arrays = files.read_npz(path)
        fields = [f.name for f in dataclasses.fields(cls) if f.name != "attributes"]
        missing = [name for name in fields if name not in arrays]
        if missing:
            advice = "Evaluate the workdir again (--mode=evaluate)."
            raise ValueError(not_this_version(path, missing, advice, what="array"))
        return cls(
            probs=arrays["probs"],
            labels=arrays["labels"],
            mask=arrays["mask"],
            patient_ids=arrays["patient_ids"],
            example_ids=arrays["example_ids"],
            classes=tuple(str(c) for c in arrays["classes"]),
            evaluated_as=tuple(str(c) for c in arrays["evaluated_as"]),
            loss=float(arrays["loss"]),
            bce=float(arrays["bce"]),
            attributes={
                k.removeprefix(ATTRIBUTE_PREFIX): v
                for k, v in arrays.items()
                if k.startswith(ATTRIBUTE_PREFIX)
            },
        )


def _source_indices(batch_index: int, batch_size: int) -> np.ndarray:
    """Source index of each row of this process's ``eval_batches`` batch ``batch_index``
    (``eval_batches`` gives process p the examples ``p, p + P, p + 2P, ...``)."""
    local = batch_index * batch_size + np.arange(batch_size)
    return jax.process_index() + jax.process_count() * local


def _allgather(tree):
    if jax.process_count() == 1:
        return tree
    from jax.experimental import multihost_utils

    return jax.tree.map(np.asarray, multihost_utils.process_allgather(tree, tiled=True))


def _ids(source, name: str, n: int) -> np.ndarray:
    """The source's per-example ``patient_ids`` / ``example_ids``, or the row number
    (phantoms: one image per patient, generated from its index)."""
    ids = getattr(source, name, None)
    return np.asarray(np.arange(n) if ids is None else ids).astype(str)


def _attributes(source, n: int) -> dict:
    """The source's ``attributes()`` (``{name: (n,) array}``), or none."""
    get = getattr(source, "attributes", None)
    attributes = {} if get is None else {k: np.asarray(v) for k, v in get().items()}
    for name, values in attributes.items():
        if values.shape != (n,):
            raise ValueError(
                f"{source!r}: attribute {name!r} has shape {values.shape}, not ({n},) as the "
                "split has examples."
            )
    return attributes


def run_pass(
    eval_fn,
    state,
    source,
    batch_size: int,
    mesh,
    *,
    classes,
    evaluated_as=None,
    columns=None,
    num_outputs=None,
    on_batch=None,
) -> Record:
    """Runs ``eval_fn`` (:func:`chestattn_jax.steps.make_eval_step`) once over every
    example of ``source``, on any number of processes.

    Args:
      classes: the model's name of each column of the record.
      evaluated_as: the source's name of each column (default: ``classes``).
      columns: the model outputs that the source's labels belong to, one per label
        column (a cross-dataset evaluation scores some of the model's classes);
        default: all, in order. Labels are widened to the model's ``num_outputs``
        classes for the loss (masked elsewhere), and outputs and maps are cut back
        to ``columns``.
      on_batch: called after each batch as ``on_batch(maps, rows)``: the global
        batch's gate-3 maps (cut to ``columns``; None where ``eval_fn`` returns none)
        and its host arrays ``image``, ``labels``, ``mask``, ``valid`` and ``index``
        (the source index) gathered from every process, and ``probs`` (the record's
        probabilities of those rows); padding rows have ``valid`` False (and mask 0).
    """
    local_bs = shd.local_batch_size(batch_size, "config.eval.batch_size")
    data_sharding = shd.batch_sharded(mesh)
    logits, labels, masks, valid, index = [], [], [], [], []
    loss_sum = bce_sum = 0.0
    for b, batch in enumerate(eval_batches(source, local_bs)):
        out = eval_fn(
            state, shd.to_global(_model_inputs(batch, columns, num_outputs), data_sharding)
        )
        # Outputs are replicated, so every process holds the global batch; gather the
        # host-side labels the same way so that rows line up.
        host = {k: batch[k] for k in ("labels", "mask", "valid")}
        if on_batch is not None:
            host["image"] = batch["image"]
        rows = _allgather({**host, "index": _source_indices(b, local_bs)})
        batch_logits = np.asarray(out["logits"])
        batch_logits = batch_logits if columns is None else batch_logits[:, columns]
        if on_batch is not None:
            rows["probs"] = _sigmoid(batch_logits)
            on_batch(_batch_maps(out, columns), rows)
        logits.append(batch_logits)
        labels.append(rows["labels"])
        masks.append(rows["mask"])
        valid.append(rows["valid"])
        index.append(rows["index"])
        loss_sum += float(out["loss"])
        bce_sum += float(out["bce"])
    valid = np.concatenate(valid)
    index = np.concatenate(index)[valid]
    order = np.argsort(index, kind="stable")  # source order on any number of processes
    probs = _sigmoid(np.concatenate(logits)[valid])
    n = int(valid.sum())
    return Record(
        probs=probs[order],
        labels=np.concatenate(labels)[valid][order],
        mask=np.concatenate(masks)[valid][order],
        patient_ids=_ids(source, "patient_ids", n),
        example_ids=_ids(source, "example_ids", n),
        classes=tuple(classes),
        evaluated_as=tuple(evaluated_as or classes),
        loss=loss_sum / n,
        bce=bce_sum / n,
        attributes=_attributes(source, n),
    )


def _batch_maps(out, columns):
    """The eval step's maps on the host (class-based ones cut to ``columns``), or None
    where it returns none (the resnet variant, a step without maps)."""
    if "maps" not in out:
        return None
    maps = np.asarray(jax.device_get(out["maps"]), np.float32)
    return maps[:, columns] if columns is not None and maps.ndim == 4 else maps


def _sigmoid(logits) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(logits).astype(np.float64)))


def _model_inputs(batch, columns, num_outputs) -> dict:
    """The device inputs: the images, and labels and mask over the model's classes."""
    out = {k: batch[k] for k in ("image", "labels", "mask")}
    if columns is None:
        return out
    for key in ("labels", "mask"):
        wide = np.zeros((len(batch[key]), num_outputs), batch[key].dtype)
        wide[:, columns] = batch[key]
        out[key] = wide
    return out


def check_paired(workdirs, records) -> None:
    """Raises a ``ValueError`` unless every record lists the same examples, in the same
    order, with the same labels, masks and classes as the first: a paired comparison
    scores every model on the same images."""
    ref = records[0]
    for w, r in zip(workdirs[1:], records[1:], strict=True):
        problems = []
        if r.classes != ref.classes or r.evaluated_as != ref.evaluated_as:
            problems.append(f"classes {', '.join(r.classes)} against {', '.join(ref.classes)}")
        elif len(r) != len(ref):
            problems.append(f"{len(r)} images against {len(ref)}")
        elif not np.array_equal(r.example_ids, ref.example_ids):
            first = int(np.flatnonzero(r.example_ids != ref.example_ids)[0])
            problems.append(
                f"other images (row {first}: {str(r.example_ids[first])!r} against "
                f"{str(ref.example_ids[first])!r})"
            )
        elif not np.array_equal(r.patient_ids, ref.patient_ids):
            problems.append("other patient ids")
        elif not (np.array_equal(r.labels, ref.labels) and np.array_equal(r.mask, ref.mask)):
            problems.append("other labels (another uncertainty policy?)")
        if problems:
            raise ValueError(
                f"{w} was evaluated on another split than {workdirs[0]}: "
                f"{problems[0]}. A paired comparison needs the same images, labels and "
                "classes; evaluate both on the same data set, split and class list."
            )
