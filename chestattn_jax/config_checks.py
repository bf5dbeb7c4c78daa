"""How config checks report: one :class:`Problems` collector that every module owning a
setting writes its findings into, and the :class:`ConfigError` that lists them.

A module that owns settings states their rules once, in a ``check_config(p, mode)``
function that reads the fields through ``p`` (``p.int("train.batch_size", 1, ...)``,
``p.choice("model.variant", VARIANTS)``) and adds a problem per value it cannot use:
``config.FIELD=VALUE: what is allowed``. :mod:`chestattn_jax.validation` calls them all,
so that every problem is found up front, before a run writes or compiles anything.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import ml_collections

from chestattn_jax.config_fields import from_json, to_json

SEED_LIMIT = 2**32


class ConfigError(ValueError):
    """Config values (or flags) a run cannot use; ``problems`` names each."""

    def __init__(self, problems: Sequence[str]):
        self.problems = tuple(problems)
        if len(self.problems) == 1:
            text = self.problems[0]
        else:
            text = f"{len(self.problems)} problems:\n" + "\n".join(
                f"  - {p}" for p in self.problems
            )
        super().__init__(text)


def is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_real(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def plain(v):
    """A config value as plain Python, as a config file writes it: ConfigDicts as dicts,
    lists as tuples (the JSON round trip of :mod:`chestattn_jax.config_fields`)."""
    return from_json(to_json(v))


def show(v) -> str:
    return repr(plain(v))


class Problems:
    """Collects problems, each naming a field, its value and what is allowed."""

    def __init__(self, config, base, mode: str = "train"):
        self.config, self.base, self.mode = config, base, mode
        self.found: list[str] = []
        self.reported: set[str] = set()
        self.missing = False

    is_int = staticmethod(is_int)
    is_real = staticmethod(is_real)
    plain = staticmethod(plain)

    def value(self, path: str):
        node = self.config
        for part in path.split("."):
            node = node[part]
        return node

    def default(self, path: str):
        node = self.base
        for part in path.split("."):
            node = node[part]
        return node

    def add(self, path: str, why: str) -> None:
        self.reported.add(path)
        self.found.append(f"config.{path}={show(self.value(path))}: {why}")

    def is_default(self, path: str) -> bool:
        value, default = plain(self.value(path)), plain(self.default(path))
        if path == "data.data_dir":  # None and "" both mean unset
            return not value and not default
        return value == default

    def ignored(self, path: str, why: str) -> None:
        """A problem if ``path`` is set to anything but its default, which ``why`` ignores
        (unless ``path`` has a problem already)."""
        if path not in self.reported and not self.is_default(path):
            self.add(path, f"{why}; leave it at its default {show(self.default(path))}.")

    def structure(self, node, base, prefix: str) -> None:
        """Fields of ``node`` that ``base`` lacks (nothing reads them) and the reverse."""
        keys, base_keys = set(node.keys()), set(base.keys())
        for k in sorted(keys - base_keys):
            self.found.append(
                f"config.{prefix}{k}: no such setting (nothing reads it); the settings of "
                f"config{'.' + prefix[:-1] if prefix else ''} are {', '.join(sorted(base_keys))}."
            )
        for k in sorted(base_keys - keys):
            self.missing = True
            self.found.append(
                f"config.{prefix}{k} is missing: a config file starts from "
                "chestattn_jax.config.get_base_config() and changes fields of it."
            )
        for k in sorted(keys & base_keys):
            path = f"{prefix}{k}"
            if path == "data.uncertainty_per_class":
                continue  # its keys are class names
            if isinstance(base[k], ml_collections.ConfigDict):
                if isinstance(node[k], ml_collections.ConfigDict | Mapping):
                    self.structure(node[k], base[k], f"{path}.")
                else:
                    self.missing = True
                    self.found.append(
                        f"config.{path}={show(node[k])}: must be a group of fields "
                        f"({', '.join(sorted(base[k].keys()))})."
                    )

    # Typed reads: the value if it has the right type, else None (and a problem).

    def int(self, path: str, low: int | None = None, allowed: str | None = None):
        v = self.value(path)
        if not is_int(v):
            self.add(path, f"must be an integer{'; ' + allowed if allowed else ''}.")
            return None
        if low is not None and v < low:
            self.add(path, f"must be {allowed or f'at least {low}'}.")
            return None
        return v

    def real(self, path: str):
        v = self.value(path)
        if not is_real(v):
            self.add(path, "must be a finite number.")
            return None
        return float(v)

    def bool(self, path: str) -> None:
        if not isinstance(self.value(path), bool):
            self.add(path, "must be true or false.")

    def choice(self, path: str, choices) -> str | None:
        v = self.value(path)
        if not isinstance(v, str) or v not in choices:
            self.add(path, f"expected one of {', '.join(choices)}.")
            return None
        return v

    def seed(self, path: str) -> None:
        v = self.value(path)
        if not is_int(v) or not 0 <= v < SEED_LIMIT:
            self.add(path, "must be an integer from 0 to 2**32 - 1.")

    def positive(self, path: str, what: str = "greater than 0") -> None:
        v = self.real(path)
        if v is not None and v <= 0:
            self.add(path, f"must be {what}.")

    def non_negative(self, path: str, what: str = "at least 0") -> None:
        v = self.real(path)
        if v is not None and v < 0:
            self.add(path, f"must be {what}.")

    def fraction(self, path: str, what: str) -> float | None:
        """A number strictly between 0 and 1."""
        v = self.real(path)
        if v is not None and not 0 < v < 1:
            self.add(path, f"must be between 0 and 1 (exclusive): {what}.")
            return None
        return v
