"""``python -m chestattn_jax.bundle``: see :mod:`chestattn_jax.bundle.cli`."""

from chestattn_jax.bundle.cli import run

if __name__ == "__main__":
    run()
