"""chestattn_jax: class-based attention for chest radiograph multi-label classification."""

from chestattn_jax import xla_flags as _xla_flags

# Before anything here starts JAX's backend: faster XLA:CPU defaults that the user has
# not set (see chestattn_jax/xla_flags.py; CHESTATTN_XLA_CPU_DEFAULTS=0 turns them off).
XLA_FLAGS_ADDED = _xla_flags.apply_cpu_defaults()

__version__ = "0.1.0"
