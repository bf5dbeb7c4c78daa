"""Writing and reading files that may live on a local disk or in a bucket (``gs://``).

No jax here: the prepare step's workers import it too.

A local file is written into a temporary file beside it and renamed into place, so a
full disk or a kill never leaves half a file. An object in a bucket is written
directly: an object store shows an object only once its upload is complete (so a
write is already all-or-nothing), and it has no rename (gcsfs copies and deletes,
and its first try logs an error on servers without the move API).

A ``gs://`` path needs the ``gcs`` extra (gcsfs, through which etils.epath reaches a
bucket); :func:`require_gcs` says so where such a path first enters.
"""

from __future__ import annotations

import functools
import importlib.util
import io
import json
import os

import numpy as np
from etils import epath


def is_local(path) -> bool:
    return "://" not in os.fspath(path)


GCS_INSTALL = "pip install 'chestattn-jax[gcs]'"


class CloudStorageUnavailable(OSError):
    """A ``gs://`` path, in a Python environment without the client that reaches it."""


def require_gcs(path, what: str = "") -> None:
    """Raises :class:`CloudStorageUnavailable` (an ``OSError``: the command line makes it
    one ``FATAL`` line) if ``path`` is in a bucket (``gs://``) and etils.epath cannot reach
    it: gcsfs, of the ``gcs`` extra, is not installed. ``what`` names where the path came
    from (``--workdir``). Local paths, ``None`` and ``gs://`` with gcsfs installed, pass."""
    text = os.fspath(path) if path else ""
    if not text.startswith("gs://"):
        return
    missing = _gcs_client_missing()
    if missing:
        named = f"{what}={text}" if what else text
        raise CloudStorageUnavailable(
            f"{named} is in Cloud Storage, which needs the gcs extra, and gcsfs is not "
            f"installed ({missing}). Install it with: {GCS_INSTALL}"
        )


@functools.cache
def _gcs_client_missing() -> str | None:
    """Why etils.epath cannot open ``gs://`` paths here, or ``None`` if it can. Asked of
    fsspec as epath asks it: otherwise the first bucket read ends in two chained
    ImportError tracebacks (fsspec's, then epath's "Please install gcsfs")."""
    import fsspec

    try:
        fsspec.get_filesystem_class("gcs")
    except ImportError as e:
        # With TensorFlow installed epath reads buckets through its gfile instead.
        if importlib.util.find_spec("tensorflow") is not None:
            return None
        cause = e.__cause__ or e
        return f"{type(cause).__name__}: {cause}"
    return None


def write_bytes(path, data: bytes) -> None:
    """Writes ``data`` to ``path`` (local or ``gs://``): locally into a temporary file
    renamed into place, so a full disk or a kill never leaves half a file. An
    ``OSError`` names the file."""
    require_gcs(path)
    path = epath.Path(path)
    tmp = path.parent / f".{path.name}.tmp"
    try:
        if is_local(path):
            tmp.write_bytes(data)
            tmp.replace(path)
        else:
            path.write_bytes(data)
    except OSError as e:
        if is_local(path):
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
        raise OSError(e.errno, f"Cannot write {path}: {e.strerror or e}") from e


def write_text(path, text: str) -> None:
    write_bytes(path, text.encode())


def write_json(path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path) -> dict | None:
    """The JSON object in ``path``, or ``None`` if there is no such file."""
    require_gcs(path)
    path = epath.Path(path)
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); move it away to continue.") from e


def write_npz(path, **arrays) -> None:
    """``np.savez`` of ``arrays`` to ``path`` (local or ``gs://``), whole or not at all."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_bytes(path, buffer.getvalue())


def read_npz(path) -> dict:
    """Every array of the ``.npz`` at ``path`` (local or ``gs://``), read at once."""
    require_gcs(path)
    with np.load(io.BytesIO(epath.Path(path).read_bytes())) as z:
        return {k: z[k] for k in z.files}
