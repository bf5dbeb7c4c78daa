"""Shared test helpers: the one tiny configuration (in the test process and on the
command line alike), the fixture that runs the commands, the runs a session shares, and
the helpers of the resume, distributed and bucket tests.

Every process a test starts compiles with the same XLA flags and shares this session's
persistent compilation cache, so a step compiled once (in the test process or in a
command) is read from the cache by every later process that builds it again.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]

# Tests run on the CPU; keep XLA from grabbing every core's worth of threads per test process.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# XLA's LLVM optimisations off, in this process and in every process a test starts (they
# inherit the environment): the tiny models compile in about half the time. The flags are
# part of the compilation cache's key, so one setting everywhere is also what lets the
# commands the tests run reuse the steps compiled here, and the other way round.
FAST_COMPILE = "--xla_backend_optimization_level=0"
# XLA:CPU's fusion emitters off too, where this XLA has the flag (a flag it does not know
# ends every process): its older emitters compile the tiny models' steps in less than half
# the time again. They may sum in another order in two programs that compute the same
# values, though: a test that compares two programs bit for bit compiles them with
# EXACT_COMPILE, XLA's own emitters.
NO_FUSION_EMITTERS = "--xla_cpu_use_fusion_emitters=false"


def _test_xla_flags() -> str:
    """FAST_COMPILE, with NO_FUSION_EMITTERS where XLA takes it: asked once per pytest run
    (its pytest-xdist workers inherit the answer, as every command a test starts does)."""
    flags = os.environ.get("CHESTATTN_TEST_XLA_FLAGS")
    if flags is None:
        probe = subprocess.run(
            [sys.executable, "-c", "import jax; jax.devices('cpu')"],
            env={**os.environ, "XLA_FLAGS": NO_FUSION_EMITTERS, "JAX_PLATFORMS": "cpu"},
            capture_output=True,
            timeout=300,
            check=False,
        )
        flags = f"{FAST_COMPILE} {NO_FUSION_EMITTERS}" if probe.returncode == 0 else FAST_COMPILE
        os.environ["CHESTATTN_TEST_XLA_FLAGS"] = flags
    return flags


TEST_XLA_FLAGS = _test_xla_flags()
if TEST_XLA_FLAGS not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {TEST_XLA_FLAGS}".strip()
# ``jax.jit(..., compiler_options=EXACT_COMPILE)``: the fusion emitters XLA uses by default.
EXACT_COMPILE = (
    {"xla_cpu_use_fusion_emitters": True} if NO_FUSION_EMITTERS in TEST_XLA_FLAGS else None
)


def load_config(name: str, arg: str | None = None):
    """Loads ``configs/NAME.py`` the way ``--config=configs/NAME.py:ARG`` does."""
    spec = importlib.util.spec_from_file_location(
        f"configs_{name}", REPO / "configs" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg) if arg is not None else module.get_config()


def proc_stat(pid) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command name (state, ppid, ...), or
    ``None`` if there is no such process (Linux)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None


# ------------------------------------------------------------- the one tiny configuration


def tiny_config(variant: str = "class", **train_overrides):
    """configs/synthetic.py shrunk to a one-block, 8-filter ResNet at 32 px and 5 classes.

    The one tiny configuration of the suite: tests change what they test (steps, the
    loss's class weights, the data set) and keep its shapes (image size, classes, batch
    sizes), so that the steps compiled for one test are the next test's cache hits.
    Commands run it through :func:`tiny_flags`.
    """
    config = load_config("synthetic", variant)
    config.data.image_size = 32
    # The five most frequent phantom findings: every one has positives in 256 images.
    config.data.classes = ("Atelectasis", "Effusion", "Infiltration", "Mass", "Nodule")
    config.data.synthetic.train_size = 256
    config.data.synthetic.validation_size = 40
    config.data.synthetic.test_size = 72
    config.model.num_filters = 8
    config.train.batch_size = 16
    config.train.num_steps = 24
    config.train.warmup_steps = 0
    config.train.schedule = "constant"
    config.train.learning_rate = 1e-2  # a tiny run must move within a few dozen steps
    config.train.log_every_steps = 4
    config.train.eval_every_steps = 12
    config.eval.batch_size = 32
    for k, v in train_overrides.items():
        config.train[k] = v
    return config


def tiny_nih_config(data_dir, variant: str = "class", **train_overrides):
    """:func:`tiny_config` on a prepared NIH-layout data set at ``data_dir`` (phantoms
    exported in NIH's layout, or a fixture): the same model and batches, NIH's 14 classes."""
    from chestattn_jax import config as config_lib
    from chestattn_jax.data.classes import NIH_CLASSES

    config = tiny_config(variant, **train_overrides)
    config.data.name, config.data.data_dir = "nih", str(data_dir)
    config.data.classes = NIH_CLASSES
    config.data.synthetic = config_lib.get_base_config().data.synthetic  # read by nothing
    config.loss.class_weights = "none"  # a small export: some classes lack positives
    return config


def config_overrides(config, base) -> list[str]:
    """The ``--config.A.B=V`` flags that turn ``base`` (the config file's config) into
    ``config``: a command line that runs exactly what a test built in Python."""

    def leaves(tree, prefix=""):
        for key, value in tree.items():
            if hasattr(value, "to_dict"):  # a ConfigDict group; plain dicts are values
                yield from leaves(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}", value

    def text(value):
        if isinstance(value, bool):
            return str(value).lower()
        if isinstance(value, tuple | list | dict):
            return repr(value)
        return str(value)

    wanted, given = dict(leaves(config)), dict(leaves(base))
    if set(wanted) != set(given):
        raise ValueError(f"fields differ: {sorted(set(wanted) ^ set(given))}")
    return [f"--config.{k}={text(v)}" for k, v in wanted.items() if v != given[k]]


def tiny_flags(config) -> list[str]:
    """``config`` (a :func:`tiny_config`, changed as a test likes) as the command line's
    ``--config=configs/synthetic.py:VARIANT --config.A.B=V ...``."""
    variant = config.model.variant
    return [
        f"--config=configs/synthetic.py:{variant}",
        *config_overrides(config, load_config("synthetic", variant)),
    ]


def set_fields(config, changes: dict):
    """Sets dotted fields of ``config`` in place (``{"data.std": 0.3}``); returns it."""
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node = config
        for p in parents:
            node = node[p]
        node[last] = value
    return config


def evaluator_option_problems(evaluator, config, **fields):
    """The problems ``evaluator``'s ``check_config`` finds in ``config`` (in evaluate mode)
    once its ``config.eval`` fields are set to ``fields`` (added where missing)."""
    from chestattn_jax import config_checks

    with config.unlocked():
        for name, value in fields.items():
            config.eval[name] = value
    p = config_checks.Problems(config, config, "evaluate")
    evaluator.check_config(p, "evaluate")
    return p.found


# ------------------------------------------- pytest-xdist: which worker runs which file, when

# Under --dist loadfile each worker runs whole files, and xdist hands them out most tests
# first: the files of a few long tests (runs in processes of their own) came last, where
# one of them could keep a worker busy long after the other had run out of files. These go
# first, longest first (CPU seconds of each alone, SAME_WORKER's together: 95, 65, 55, then
# 15 to 50), so that the short files even out the end. test_experiment goes before
# test_main, whose command line then reads the tiny image model's steps from the
# compilation cache, as test_cross_dataset and test_prepare read test_gcs's.
LONGEST_FIRST = (
    "test_distributed.py",  # with test_resume
    "test_gcs.py",
    "test_workdir_safety.py",  # trains tiny_run, which the files below copy
    "test_experiment.py",
    "test_main.py",
    "test_train.py",
    "test_predict.py",
    "test_speed_options.py",
    "test_convert.py",
    "test_interrupt.py",
    "test_cross_dataset.py",
    "test_prepare.py",
    "test_models.py",
    "test_parity.py",
    "test_sharding.py",
)
# Files that one worker runs, as one, for the session fixture they share: the
# uninterrupted run of resume_config (resume_reference). (tiny_run is trained once for
# every worker.)
SAME_WORKER = {
    "test_resume.py": "test_distributed.py",
}


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """--dist loadfile with :data:`SAME_WORKER`'s files joined and :data:`LONGEST_FIRST`'s
    handed out first (the others as xdist orders them: most tests first)."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class LongestFirst(LoadFileScheduling):
        def _split_scope(self, nodeid):
            folder, _, name = super()._split_scope(nodeid).rpartition("/")
            return f"{folder}/{SAME_WORKER.get(name, name)}".lstrip("/")

        def _assign_work_unit(self, node):
            rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
            first = min(self.workqueue, key=lambda s: rank.get(s.rpartition("/")[2], len(rank)))
            self.workqueue.move_to_end(first, last=False)  # xdist takes the queue's first
            super()._assign_work_unit(node)

    return LongestFirst(config, log)


# ------------------------------------------------------------ compiling once per session


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
    """Shares compiled executables between tests that build the same step again, in this
    process and (through the environment they inherit) in every process a test starts."""
    import jax

    # Under pytest-xdist every worker has its own temporary folder: the cache goes beside
    # them, one for the whole run.
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    cache = root / "jax_cache"
    cache.mkdir(exist_ok=True)
    cache = str(cache)
    settings = {
        "jax_compilation_cache_dir": cache,
        "jax_persistent_cache_min_compile_time_secs": 0.0,
        "jax_persistent_cache_min_entry_size_bytes": 0,
    }
    saved = {k: os.environ.get(k.upper()) for k in settings}
    for name, value in settings.items():
        jax.config.update(name, value)
        os.environ[name.upper()] = str(value)
    yield cache
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name.upper(), None)
        else:
            os.environ[name.upper()] = value


@pytest.fixture(scope="session", autouse=True)
def commands_without_torch(tmp_path_factory):
    """The processes a test starts do not find torch (the parity extra, which test_parity
    and test_convert use in the test process): tensorboardX imports it whenever it can,
    about 2 s of CPU in every process that trains, for nothing the commands use. A package
    of that name that fails to import, first on their path, is what they see where torch is
    not installed."""
    hidden = tmp_path_factory.getbasetemp() / "without_torch"
    (hidden / "torch").mkdir(parents=True, exist_ok=True)
    (hidden / "torch" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'torch'\", name='torch')\n"
    )
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(hidden), saved) if p)
    yield
    if saved is None:
        os.environ.pop("PYTHONPATH")
    else:
        os.environ["PYTHONPATH"] = saved


def subprocess_env(env_extra=None) -> dict:
    """The environment of a process a test starts: this one's (the CPU, the XLA flags,
    the session's compilation cache, no torch), without a signal hook unless ``env_extra``
    sets one."""
    from chestattn_jax.train import SIGNAL_AT_STEP_ENV

    env = {k: v for k, v in os.environ.items() if k != SIGNAL_AT_STEP_ENV}
    env.update(env_extra or {})
    return env


class CommandLine:
    """Runs the package's commands as a user does: ``python -m MODULE ARGS`` from the
    repository, in :func:`subprocess_env`. ``cli(*args)`` runs ``chestattn_jax.main``
    and returns the finished process (text output captured); ``module=`` names another
    command (``chestattn_jax.data.export``, ``chestattn_jax.compare``, ...)."""

    def argv(self, args, module="chestattn_jax.main"):
        return [sys.executable, "-m", module, *map(str, args)]

    server = None  # the fork server of this test process (tests/command_server.py)

    def __call__(self, *args, module="chestattn_jax.main", env=None, timeout=600, **kwargs):
        kwargs.setdefault("cwd", REPO)
        if set(kwargs) == {"cwd"}:
            if CommandLine.server is None:
                from command_server import ForkServer

                CommandLine.server = ForkServer(subprocess_env())
                atexit.register(CommandLine.server.close)
            done = CommandLine.server.run(module, args, kwargs["cwd"], subprocess_env(env), timeout)
            if done is not None:
                return done
        return subprocess.run(
            self.argv(args, module),
            env=subprocess_env(env),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            **kwargs,
        )

    def start(self, *args, module="chestattn_jax.main", env=None, **kwargs):
        """The command as a running ``Popen`` (``kwargs`` as Popen's: pipes, session...)."""
        kwargs.setdefault("cwd", REPO)
        return subprocess.Popen(self.argv(args, module), env=subprocess_env(env), **kwargs)


@pytest.fixture(scope="session")
def cli():
    """The fixture of every test that runs a command: see :class:`CommandLine`."""
    return CommandLine()


def fatal_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("FATAL")]


def the_one_fatal_line(proc) -> str:
    """A command that failed with exactly one FATAL line and none of the echoes of it
    that Orbax's threads, TensorStore's late callbacks and asyncio's unretrieved tasks
    used to print, with tracebacks."""
    assert proc.returncode == 1, proc.stderr[-3000:]
    for echo in ("Event loop is closed", "Traceback", "never retrieved", "ImportError"):
        assert echo not in proc.stderr, proc.stderr[-3000:]
    (fatal,) = fatal_lines(proc.stderr)
    return fatal


# ------------------------------------------------------------------ runs a session shares


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One finished 8-step run of the tiny class-based model (checkpoints at steps 4 and 8,
    evaluated), for tests that copy a workdir and then misuse or damage the copy.

    Trained once per pytest run: the first test process that needs it trains it beside the
    workers' folders (the others wait on a lock), and each process gets a copy of its own."""
    import fcntl
    import shutil

    from chestattn_jax import train

    config = tiny_config("class", num_steps=8, eval_every_steps=4)
    config.loss.class_weights = "none"
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    shared, done = root / "tiny_run_shared" / "w", root / "tiny_run_shared" / "done"
    with open(root / "tiny_run.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(shared, ignore_errors=True)
            train.train_and_evaluate(config, str(shared))
            done.touch()
    workdir = tmp_path_factory.mktemp("tiny_run") / "w"
    shutil.copytree(shared, workdir)
    return config, workdir


def copy_workdir(src, dst):
    """A copy of a workdir, as a user would make with ``cp -r``."""
    import shutil

    shutil.copytree(src, dst)
    return dst


# ----------------------------------------- training in processes of their own (resume, ...)


def resume_config():
    """tiny_config with validation every 6 steps, augmentation on and early stopping.

    Its validation loss is lowest at step 6, so with patience 2 it stops at step 18
    of 24: a resumed run that lost the early-stopping count would run on to 24.
    """
    config = tiny_config("class", eval_every_steps=6, num_steps=24, patience=2)
    # As test_sharding: 2 processes match 1 within 1e-4 (test_distributed shares this config).
    config.train.learning_rate = 1e-3
    config.data.augment.enabled = True  # the augmentation's random draws must resume too
    return config


def distributed_config():
    """resume_config for 12 steps: the uninterrupted run of :func:`resume_config` is the
    1-process reference of test_distributed (its checkpoint of step 12)."""
    config = resume_config()
    config.train.num_steps = 12
    return config


# ``train.train(resume_config(), WORKDIR)`` with JSON overrides of config.train and
# config.data: a run in a process of its own, as a restart is.
TRAIN_SCRIPT = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, "tests")
    from conftest import resume_config
    from chestattn_jax import train
    config = resume_config()
    config.train.update(json.loads(sys.argv[2]))
    config.data.update(json.loads(sys.argv[3]))
    train.train(config, sys.argv[1])
    """
)


def start_training(workdir, signal_at=None, data=None, **train_overrides):
    """``train.train(resume_config(), workdir)`` in a new process, with ``data`` and
    ``train_overrides`` set in ``config.data`` and ``config.train``; with ``signal_at``
    ("STEP:SIGNAL") it sends itself that signal after that step."""
    import json

    from chestattn_jax.train import SIGNAL_AT_STEP_ENV

    env = subprocess_env({SIGNAL_AT_STEP_ENV: signal_at} if signal_at else None)
    overrides = (json.dumps(train_overrides), json.dumps(data or {}))
    return subprocess.Popen(
        [sys.executable, "-c", TRAIN_SCRIPT, str(workdir), *overrides],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(proc, timeout=300):
    """``(returncode, output)`` of a process of :func:`start_training`."""
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def run_training(workdir, signal_at=None, data=None, **train_overrides):
    return finish(start_training(workdir, signal_at, data, **train_overrides))


class _Reference:
    """The uninterrupted run of resume_config in a process of its own, started at most
    once per session (by the first test that needs it, so that it runs beside that test's
    own processes): test_resume and test_distributed both compare with it."""

    def __init__(self, tmp_path_factory):
        self._factory = tmp_path_factory
        self._proc = self._result = self.workdir = None

    def start(self):
        if self._proc is None:
            self.workdir = self._factory.mktemp("reference") / "w"
            self._proc = proc = start_training(self.workdir)
            atexit.register(lambda: proc.poll() is None and proc.kill())  # a test failed first
        return self.workdir

    def done(self):
        """The reference's workdir, once it has finished."""
        self.start()
        if self._result is None:
            self._result = finish(self._proc)
        code, out = self._result
        assert code == 0, out[-3000:]
        return self.workdir


@pytest.fixture(scope="session")
def resume_reference(tmp_path_factory):
    return _Reference(tmp_path_factory)


# Wall-clock figures of one progress report: the only values two runs may not share.
TIMING_KEYS = ("train/steps_per_sec", "train/images_per_sec", "train/data_wait")


def final_state(workdir, step=None):
    """``(step, arrays)`` of checkpoint ``step`` (default: the latest), read by Orbax as
    numpy arrays (without a template, so also when several processes saved it)."""
    import jax
    import numpy as np
    import orbax.checkpoint as ocp

    if step is None:
        with ocp.CheckpointManager(
            os.path.join(workdir, "checkpoints"),
            options=ocp.CheckpointManagerOptions(read_only=True),
        ) as manager:
            step = manager.latest_step()
    path = os.path.join(workdir, "checkpoints", str(step), "state")
    with ocp.PyTreeCheckpointer() as checkpointer:
        tree = checkpointer.metadata(path).item_metadata.tree
        as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
        return step, checkpointer.restore(path, args=ocp.args.PyTreeRestore(restore_args=as_numpy))


def assert_bitwise_equal(a, b):
    import jax
    import numpy as np

    leaves_a, tree_a = jax.tree.flatten(a)
    leaves_b, tree_b = jax.tree.flatten(b)
    assert tree_a == tree_b
    for x, y in zip(leaves_a, leaves_b, strict=True):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.tobytes() == y.tobytes()


def metric_rows(workdir):
    """The rows of ``metrics.jsonl`` without their wall-clock figures."""
    from chestattn_jax.metric_writers import read_jsonl

    rows = read_jsonl(os.path.join(workdir, "metrics.jsonl"))
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]


# ------------------------------------------------------------------------------ phantoms


def only(name: str):
    """The label vector of a phantom whose only finding is ``name``."""
    import numpy as np

    from chestattn_jax.data.synthetic import PHANTOM_CLASSES

    labels = np.zeros(len(PHANTOM_CLASSES), np.int32)
    labels[PHANTOM_CLASSES.index(name)] = 1
    return labels


def dilate(mask, r: int):
    """Dilation by a (2r + 1)-pixel square."""
    import numpy as np

    out = mask.copy()
    for axis in (0, 1):
        grown = out.copy()
        for shift in range(1, r + 1):
            grown |= np.roll(out, shift, axis) | np.roll(out, -shift, axis)
        out = grown
    return out


# ------------------------------------------- experiment cells finished by hand (no training)
# Every cell with the files a finished cell holds (config, validation scores, test record,
# localisation findings, data set fingerprint), from known numbers: the experiment report's
# route without training (test_experiment_report, and the pages of test_compare_html).

HAND_PATIENTS, HAND_IMAGES = 24, 2  # per fold: 48 test images
# The λ of each (fold, seed) with the best validation mean AUC: both λ are chosen somewhere.
HAND_BEST = {(0, 0): 1.0, (1, 0): 0.1, (0, 1): 0.1, (1, 1): 1.0}


def hand_report_config(seeds=(0, 1)):
    """tiny_config as a two-fold experiment of the three variants and two λ."""
    config = tiny_config("class")
    config.experiment.folds = 2
    config.experiment.variants = ("resnet", "image", "class")
    config.experiment.entropy_weights = (0.1, 1.0)
    config.experiment.seeds = seeds
    return config


def hand_fold_examples(fold: int, classes, rng, ids_from: int | None = None):
    """A fold's test split: labels, masks (a few unknown), patients of two images each."""
    import numpy as np

    n, k = HAND_PATIENTS * HAND_IMAGES, len(classes)
    labels = (rng.random((n, k)) < 0.35).astype(np.int32)
    labels[:2], labels[2:4] = 1, 0  # every class has both values
    mask = (rng.random((n, k)) > 0.1).astype(np.int32)
    mask[:4] = 1
    start = fold * n if ids_from is None else ids_from
    return {
        "labels": labels,
        "mask": mask,
        "patient_ids": np.asarray([f"p{(start + i) // HAND_IMAGES}" for i in range(n)]),
        "example_ids": np.asarray([f"img{start + i}.png" for i in range(n)]),
    }


def hand_findings(examples, rng, classes) -> dict:
    """Per finding (a positive, known label): each source's values, the same findings."""
    import numpy as np

    from chestattn_jax.localization_metrics import FINDING_FIELDS, FindingTable

    rows, cols = np.nonzero((examples["labels"] == 1) & (examples["mask"] == 1))
    out = {}
    for source in ("model", "class_prior", "uniform"):
        values = {f: rng.random(len(rows)) for f in FINDING_FIELDS}
        values["pixel_hit"] = (values["pixel_hit"] < 0.6).astype(np.float64)
        values["cell_hit"] = np.maximum(values["pixel_hit"], values["cell_hit"] < 0.3)
        out[source] = FindingTable(
            example_index=rows.astype(np.int64),
            class_index=cols.astype(np.int64),
            example_ids=examples["example_ids"][rows],
            patient_ids=examples["patient_ids"][rows],
            values=values,
            class_names=tuple(classes),
            map_threshold=0.5,
        )
    return out


def hand_write_cell(root, config, cell, examples, rng, fingerprint=None):
    """``cell`` finished as training and evaluation leave it (``fingerprint``: its data
    set's, by default the phantoms' of its fold); returns its probs and findings."""
    import json

    from chestattn_jax import experiment
    from chestattn_jax.data.input_pipeline import dataset_fingerprint
    from chestattn_jax.evaluation.evaluators.localization import FINDINGS_FILE
    from chestattn_jax.evaluation.inference_pass import Record
    from chestattn_jax.evaluation.pipeline import EVALUATION_VERSION
    from chestattn_jax.localization_metrics import save_findings

    classes = tuple(config.data.classes)
    w = experiment.cell_workdir(root, cell)
    (w / "eval").mkdir(parents=True)
    cell_config = experiment.cell_config(config, cell)
    (w / "config.json").write_text(cell_config.to_json_best_effort())
    fingerprint = fingerprint or dataset_fingerprint(cell_config)["fingerprint"]
    (w / "dataset.json").write_text(json.dumps({"fingerprint": fingerprint}))
    score = 0.9 if HAND_BEST.get((cell.fold, cell.seed)) == cell.entropy_weight else 0.7
    rows = [{"step": 4, "val/mean_auc": score, "val/bce": 1.0 - score}]
    (w / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    signal = {"resnet": 1.0, "image": 0.8, "class": 1.2}[cell.variant] + 0.3 * cell.seed
    shape = examples["labels"].shape
    probs = examples["labels"] * signal * rng.random(shape) + rng.random(shape)
    Record(
        probs=probs,
        labels=examples["labels"],
        mask=examples["mask"],
        patient_ids=examples["patient_ids"],
        example_ids=examples["example_ids"],
        classes=classes,
        evaluated_as=classes,
    ).save(w / "eval" / "predictions.npz")
    metrics = {"step": 4, "version": EVALUATION_VERSION}
    findings = None
    if cell.variant != "resnet":
        findings = hand_findings(examples, rng, classes)
        save_findings(w / "eval" / FINDINGS_FILE, findings)
        origins = dict.fromkeys(classes, "training split")
        metrics["localization"] = {"baselines": {"class_prior": {"built_from_class": origins}}}
    (w / "eval" / "metrics.json").write_text(json.dumps(metrics))
    return probs, findings


def hand_finished(root, config, seed=0):
    """Every cell of ``config`` finished by hand; returns the folds' examples, and per
    cell its probs and findings."""
    import numpy as np

    from chestattn_jax import experiment

    rng = np.random.default_rng(seed)
    classes = config.data.classes
    folds = [hand_fold_examples(f, classes, rng) for f in range(config.experiment.folds)]
    cells = {}
    for cell in experiment.cells(config):
        cells[cell] = hand_write_cell(root, config, cell, folds[cell.fold], rng)
    return folds, cells


# ------------------------------------------------------------ pages in a headless browser


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the module (its console log kept); the module's tests
    skip with one line where no browser is installed."""
    import shutil

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        chromium = None
    if not (chromium and driver_path):
        pytest.skip(
            "no headless browser: apt-get install chromium chromium-driver; pip install selenium"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.add_argument("--window-size=1366,900")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    yield driver
    driver.quit()


def table_rows(driver, section: str, caption_start: str):
    """The body rows of the table of ``section`` whose caption starts with
    ``caption_start``, as lists of (text, data-sort), read in the browser (after any
    sorting)."""
    return driver.execute_script(
        """
        var tables = document.querySelectorAll('#' + arguments[0] + ' table'), t = null;
        for (var i = 0; i < tables.length; i++)
          if (tables[i].caption && tables[i].caption.textContent.indexOf(arguments[1]) === 0)
            t = tables[i];
        return Array.prototype.map.call(t.tBodies[0].rows, function (r) {
          return Array.prototype.map.call(r.cells, function (c) {
            return [c.textContent.trim(), c.getAttribute('data-sort')];
          });
        });
        """,
        section,
        caption_start,
    )
