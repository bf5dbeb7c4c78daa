"""Faster XLA:CPU defaults, set in ``XLA_FLAGS`` before JAX starts its backend.

XLA reads ``XLA_FLAGS`` once, when the first backend is created (the first
``jax.devices()`` or computation), not when ``jax`` is imported; so
:func:`apply_cpu_defaults` runs from ``chestattn_jax/__init__.py`` and works as long
as nothing has used JAX before this package is imported.

Which flags: none at present. Measured with jaxlib 0.10.2 on a 2-core AMD EPYC
(AVX-512), the class-based ResNet-50 train step at 128 px, batch 8, each setting
compiled in one process with its steps alternating (``benchmarks/train_step.py
--compare_xla``; BENCHMARKS.md has the table, with the tiny test model beside it):

- ``--xla_cpu_use_onednn=true`` with ``--xla_cpu_experimental_onednn_custom_call=true``
  (the "oneDNN flags"): no effect, 1.04x wall and 0.99x CPU time, the same loss to the
  last bit. The compiled HLO is byte-identical to the default's and oneDNN runs the same
  GEMM calls: the rewrites behind these flags are compiled into XLA:CPU only with
  ``XLA_ONEDNN`` and ``ENABLE_ONEDNN_ASYNC``, which the PyPI jaxlib lacks.
- ``--xla_cpu_experimental_onednn_fusion_type=dot|eltwise|reduce``: the step fails to
  compile ("partition compile failed").
- ``--xla_cpu_experimental_ynn_fusion_type=`` (YNNPACK off, Eigen convolutions): 0.82x.
  Adding YNNPACK's eltwise and reduce fusions: 0.73x.
- ``--xla_cpu_prefer_vector_width=512``: 1.05x wall, 1.01x CPU here, 0.97x in another
  run: noise.
- ``--xla_cpu_enable_concurrency_optimized_scheduler=true``: 0.89x.
- ``--xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_GREEDY``: 0.91x
  on the tiny model (not tried on ResNet-50). ``--xla_cpu_enable_fast_math``: not
  tried, it may change results beyond rounding by design.

So the default XLA:CPU pipeline (YNNPACK convolutions and dots) is kept. The mechanism
stays so that a flag measured to help (a later jaxlib, another CPU) is one line in
:data:`CPU_DEFAULTS`; tests/test_speed_options.py then checks that it changes results
only by float rounding.

Nothing is changed when JAX will not run on the CPU (``JAX_PLATFORMS`` names another
platform first, or a GPU/TPU plugin is installed and ``JAX_PLATFORMS`` is unset), when a
flag already appears in ``XLA_FLAGS`` (the user's value wins), when the backend has
already started, or when ``CHESTATTN_XLA_CPU_DEFAULTS=0``.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import MutableMapping

# Flags measured to speed up the train step without changing results beyond rounding.
CPU_DEFAULTS: tuple[str, ...] = ()
OPT_OUT = "CHESTATTN_XLA_CPU_DEFAULTS"

# Importable modules that mean JAX will pick an accelerator when JAX_PLATFORMS is unset.
ACCELERATOR_PLUGINS = (
    "jax_cuda12_plugin",
    "jax_cuda13_plugin",
    "jax_rocm60_plugin",
    "jax_rocm7_plugin",
    "libtpu",
    "jax_plugins.xla_cuda12",
    "jax_plugins.xla_cuda13",
)


def _flag_name(flag: str) -> str:
    return flag.lstrip("-").split("=", 1)[0]


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def will_run_on_cpu(environ: MutableMapping[str, str] = os.environ) -> bool:
    """Whether JAX's default backend will be the CPU, decided without starting JAX."""
    platforms = environ.get("JAX_PLATFORMS", "").strip()
    if platforms:
        return platforms.split(",")[0].strip().lower() == "cpu"
    return not any(_installed(m) for m in ACCELERATOR_PLUGINS)


def _backend_started() -> bool:
    if "jax" not in sys.modules:
        return False
    try:
        from jax._src import xla_bridge

        return bool(xla_bridge._backends)
    except (ImportError, AttributeError):
        return False


def apply_cpu_defaults(
    environ: MutableMapping[str, str] = os.environ, flags=CPU_DEFAULTS
) -> list[str]:
    """Appends those of ``flags`` that the user has not set to ``environ["XLA_FLAGS"]``.

    Only when JAX will run on the CPU and has not started its backend yet (see the
    module docstring). Returns the flags added (empty when nothing changed).
    """
    if environ.get(OPT_OUT, "1").strip().lower() in ("0", "false", "no"):
        return []
    if not will_run_on_cpu(environ) or _backend_started():
        return []
    current = environ.get("XLA_FLAGS", "")
    user = {_flag_name(f) for f in current.split()}
    added = [f for f in flags if _flag_name(f) not in user]
    if added:
        environ["XLA_FLAGS"] = " ".join([current, *added]).strip()
    return added
