"""A trained model as one portable file (docs/bundle.md).

  python -m chestattn_jax.bundle export --workdir=W --out=model.zip   # best checkpoint
  python -m chestattn_jax.bundle verify model.zip
  python -m chestattn_jax.bundle predict model.zip a.png b.dcm

  from chestattn_jax import bundle
  model = bundle.load("model.zip")         # jax and numpy only: no model code
  model.predict(["a.png"])                 # as chestattn_jax.load(W).predict
  model.embed(["a.png"])                   # g and each gate's ĝ

Loading imports neither the model code nor flax or optax; exporting
(:mod:`chestattn_jax.bundle.export`) does.
"""

from __future__ import annotations

from chestattn_jax.bundle.runtime import Bundle, load
from chestattn_jax.bundle_file import BundleError, trained_variables

__all__ = ["Bundle", "BundleError", "load", "trained_variables"]
