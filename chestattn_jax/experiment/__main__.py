"""``python -m chestattn_jax.experiment``: the flags of :mod:`chestattn_jax.main` and
the experiment's own; see :mod:`chestattn_jax.experiment`."""

from absl import app, flags

from chestattn_jax import experiment
from chestattn_jax import main as main_cli  # its flags: --config, --workdir, distributed ones
from chestattn_jax.experiment.cli import command

# --help prints the main module's docstring: the command's, the package's.
__doc__ = experiment.__doc__

flags.DEFINE_string("cell", None, "Run only this cell, by index or name (--list shows them).")
flags.DEFINE_bool(
    "list",
    False,
    "Print the cells (or the one of --cell), their status (new, started, done, or "
    "changed: finished under other settings) and workdirs, and exit.",
)
flags.DEFINE_bool(
    "reevaluate",
    False,
    "Evaluate again the finished cells whose only differences from the config are "
    "evaluation settings (eval.*), instead of refusing them.",
)
flags.DEFINE_bool("report", False, "Write ROOT/report/ from the finished cells.")
flags.DEFINE_integer("num_draws", 1000, "--report: bootstrap draws.")
flags.DEFINE_bool(
    "allow_mismatch",
    False,
    "--report: write the report although cells differ from the config or from each other "
    "(another data set, other test images), listing the differences in it.",
)
app.run(command, flags_parser=main_cli.parse_flags)
