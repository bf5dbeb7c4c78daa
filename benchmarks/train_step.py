"""Images/s of the jitted train and inference steps, beside a PyTorch reference.

For each variant (resnet, image, class), image size and compute dtype it times

- JAX: ``chestattn_jax.steps.make_train_step`` (uint8 images normalised on the device,
  Eq. 5, Adam, state donated) and ``make_eval_step`` (logits and loss), on one
  synthetic in-memory batch; compile time is measured apart;
- PyTorch (when torch is importable; ``--notorch`` to leave it out): the same model
  (torchvision's ResNet-50 with a 1-channel stem, the same LTPA gates, the class gate
  vectorised over classes with one wide 1x1 conv and einsums, the same Eq. 5 loss with
  its entropy term, Adam, fused on a GPU), eager mode and/or under ``torch.compile``
  (``--torch_modes=eager,compile``); autocast for bfloat16 and channels_last on GPU.

After a warm-up the steps alternate, so that background load hits all alike; the table
gives the median of the timed steps, the ratio JAX / the faster PyTorch mode, and the
TFLOP/s that XLA's operation count of the (lowered) train step gives, against a large
matrix product timed first on the same device. It is appended to BENCHMARKS.md with the
machine it ran on. ``benchmarks/gpu_run.sh`` runs the GPU set in one call.

  python benchmarks/train_step.py --quick                       # small CPU run
  python benchmarks/train_step.py --sizes=128,224 --batch_sizes=8,16 --steps=5
  python benchmarks/train_step.py --sizes=224 --batch_sizes=256 --dtypes=bfloat16 \
      --torch_modes=eager,compile --steps=20                    # a GPU

Needs only the package's own dependencies, plus torch (and torchvision when present)
for the reference; on a GPU, jax with CUDA and torch.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import sys
import time

from absl import app, flags

# JAX and PyTorch share one GPU here: no preallocation of most of its memory by JAX.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

FLAGS = flags.FLAGS
flags.DEFINE_list("variants", ["resnet", "image", "class"], "Model variants.")
flags.DEFINE_list("sizes", ["224", "320"], "Image sizes (square, pixels).")
flags.DEFINE_list(
    "batch_sizes", ["16"], "Global batch size, one for all sizes or one per entry of --sizes."
)
flags.DEFINE_list("dtypes", ["float32", "bfloat16"], "Compute dtypes (config.model.dtype).")
flags.DEFINE_integer("steps", 10, "Timed steps per setting (the median is reported).")
flags.DEFINE_integer("warmup", 2, "Untimed steps after compilation.")
flags.DEFINE_bool("torch", None, "Time the PyTorch reference (default: when importable).")
flags.DEFINE_list(
    "torch_modes",
    ["eager"],
    "PyTorch reference modes: eager (AMP and channels_last on a GPU) and/or compile "
    "(the same under torch.compile, default mode); each is timed beside JAX.",
)
flags.DEFINE_float(
    "peak_tflops",
    0.0,
    "Peak rate the achieved TFLOP/s is compared with (0: measure a large matrix product in "
    "the benchmark's compute dtype on the device first).",
)
flags.DEFINE_bool("inference", True, "Also time the inference (eval) step.")
flags.DEFINE_bool(
    "skip_unused_stage4",
    True,
    "config.model.skip_unused_stage4 (and the same shortcut in the PyTorch reference).",
)
flags.DEFINE_integer("num_classes", 14, "k (NIH ChestX-ray14 has 14).")
flags.DEFINE_bool("quick", False, "Small CPU run: 128 px, batch 8, float32, 3 timed steps.")
flags.DEFINE_string("output", "BENCHMARKS.md", "Markdown file the table is appended to ('' none).")
flags.DEFINE_string(
    "compare_xla",
    "",
    "JSON {label: {XLA option: value}}: instead of the PyTorch comparison, time the JAX train "
    "step compiled with each set of XLA:CPU options, in one process, steps alternating "
    "('{}' is the default pipeline). E.g. "
    '\'{"default": {}, "no YNNPACK": {"xla_cpu_experimental_ynn_fusion_type": ""}}\'.',
)
flags.DEFINE_bool("tiny", False, "The tests' one-block, 8-filter backbone instead of ResNet-50.")


# --------------------------------------------------------------------------- PyTorch


def torch_reference(variant: str, num_classes: int, skip_stage4: bool, attention_dim: int = 16):
    """The PyTorch reference model, or None when torch cannot be imported."""
    import torch
    from torch import nn

    def backbone():
        try:
            import torchvision

            net = torchvision.models.resnet50(weights=None)
        except ImportError:  # torch alone: the same ResNet v1.5 layers, built here
            net = _resnet50(torch)
        net.conv1 = nn.Conv2d(1, 64, 7, 2, 3, bias=False)
        net.fc = nn.Identity()
        return net

    class Gates(nn.Module):
        """``n`` LTPA gates (Eq. 1-3) on one stage; ``n > 1`` is the class gate (Eq. 4)."""

        def __init__(self, channels, n=1):
            super().__init__()
            self.n = n
            self.b = nn.Conv2d(channels, n * attention_dim, 1, bias=False)  # all B_j at once
            self.a = nn.Parameter(torch.randn(n, attention_dim) / attention_dim**0.5)

        def forward(self, local, global_proj):
            b, _, h, w = local.shape
            u = self.b(local).float().view(b, self.n, attention_dim, h * w)
            scores = torch.einsum("bkdp,kd->bkp", u, self.a)
            if global_proj is not None:
                # pc: + A . g'; a per-image constant that softmax cancels, so its gradient is
                # zero (detached, as the JAX model does).
                scores = scores + torch.einsum("bd,kd->bk", global_proj.detach(), self.a)[..., None]
            weights = torch.softmax(scores, dim=-1)
            pooled = torch.einsum("bkp,bcp->bkc", weights.to(local.dtype), local.flatten(2))
            return weights, pooled.float(), scores

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = backbone()
            if variant == "resnet":
                self.classifier = nn.Linear(2048, num_classes)
                return
            self.proj = nn.ModuleList([nn.Linear(2048, attention_dim) for _ in range(3)])
            shared = 3 if variant == "image" else 2
            self.gates = nn.ModuleList([Gates(256 * 2**s) for s in range(shared)])
            if variant == "image":
                self.classifier = nn.Linear(256 + 512 + 1024, num_classes)
            else:
                self.class_gate = Gates(1024, num_classes)
                self.class_w = nn.Parameter(torch.randn(num_classes, 256 + 512 + 1024) * 0.01)
                self.class_b = nn.Parameter(torch.zeros(num_classes))

        def forward(self, x):
            r = self.backbone
            x = r.maxpool(r.relu(r.bn1(r.conv1(x))))
            l1 = r.layer1(x)
            l2 = r.layer2(l1)
            l3 = r.layer3(l2)
            skip = skip_stage4 and variant != "resnet"
            g = None if skip else r.layer4(l3).float().mean((2, 3))
            if variant == "resnet":
                return self.classifier(g), None
            proj = [None if skip else p(g) for p in self.proj]
            pooled = [
                gate(local, proj[s])[1][:, 0]
                for s, (gate, local) in enumerate(zip(self.gates, (l1, l2, l3), strict=False))
            ]
            if variant == "image":
                return self.classifier(torch.cat(pooled, -1)), None
            _, pooled3, scores = self.class_gate(l3, proj[2])
            shared = torch.cat(pooled, -1)
            c12 = shared.shape[-1]
            logits = (
                shared @ self.class_w[:, :c12].T
                + torch.einsum("bkc,kc->bk", pooled3, self.class_w[:, c12:])
                + self.class_b
            )
            return logits, scores

    return Net()


def torch_loss(logits, scores, labels, mask, weights, entropy_weight):
    """Eq. 5, as chestattn_jax.losses.regularized_loss."""
    import torch
    import torch.nn.functional as F

    logits = logits.float()
    n = logits.shape[0]
    term = weights * labels * F.logsigmoid(logits) + (1 - labels) * F.logsigmoid(-logits)
    loss = -(mask * term).sum() / n
    if scores is not None:
        log_p = torch.log_softmax(scores.float(), dim=-1)
        entropy = -(log_p.exp() * log_p).sum(-1)
        loss = loss - entropy_weight * (mask * (1 - labels) * entropy).sum() / n
    return loss


def _resnet50(torch):
    """torchvision's resnet50 layer for layer, for machines without torchvision."""
    from torch import nn

    class Bottleneck(nn.Module):
        def __init__(self, cin, width, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(width)
            self.conv3 = nn.Conv2d(width, width * 4, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(width * 4)
            self.relu = nn.ReLU(inplace=True)
            self.downsample = None
            if stride != 1 or cin != width * 4:
                self.downsample = nn.Sequential(
                    nn.Conv2d(cin, width * 4, 1, stride, bias=False), nn.BatchNorm2d(width * 4)
                )

        def forward(self, x):
            y = self.relu(self.bn1(self.conv1(x)))
            y = self.relu(self.bn2(self.conv2(y)))
            y = self.bn3(self.conv3(y))
            return self.relu(y + (x if self.downsample is None else self.downsample(x)))

    net = nn.Module()
    net.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
    net.bn1, net.relu, net.maxpool = nn.BatchNorm2d(64), nn.ReLU(True), nn.MaxPool2d(3, 2, 1)
    cin = 64
    for i, blocks in enumerate((3, 4, 6, 3)):
        layers = []
        for j in range(blocks):
            layers.append(Bottleneck(cin, 64 * 2**i, 2 if i > 0 and j == 0 else 1))
            cin = 64 * 2**i * 4
        setattr(net, f"layer{i + 1}", nn.Sequential(*layers))
    return net


class TorchBench:
    """Train and inference steps of the PyTorch reference on one synthetic batch.

    ``compile``: forward and loss go through ``torch.compile`` (default mode; the backward
    is then AOTAutograd's compiled graph); the first call of each step is its compile
    time (``compile_train_s``, ``compile_infer_s``; the inference step only with
    ``inference``). On a GPU Adam is the fused kernel.
    """

    def __init__(
        self,
        variant,
        size,
        batch,
        dtype,
        num_classes,
        skip_stage4,
        mean,
        std,
        lam,
        compile=False,
        inference=True,
    ):
        import torch

        self.torch = torch
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        torch.backends.cudnn.benchmark = True  # the fastest convolution algorithms, as XLA picks
        self.amp = dtype != "float32"
        self.amp_dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(dtype)
        fmt = torch.channels_last if self.device == "cuda" else torch.contiguous_format
        torch.manual_seed(0)
        self.model = torch_reference(variant, num_classes, skip_stage4).to(
            self.device, memory_format=fmt
        )
        fused = {"fused": True} if self.device == "cuda" else {}
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-4, **fused)
        self.scaler = torch.amp.GradScaler(enabled=self.amp_dtype == torch.float16)
        g = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (batch, 1, size, size), dtype=torch.uint8, generator=g)
        self.images = images.to(self.device).contiguous(memory_format=fmt)
        self.labels = torch.randint(0, 2, (batch, num_classes), generator=g).float()
        self.labels = self.labels.to(self.device)
        self.mask = torch.ones_like(self.labels)
        self.weights = torch.ones(num_classes, device=self.device)
        self.mean, self.std, self.lam = mean, std, lam
        self.loss_fn = torch.compile(self._forward_loss) if compile else self._forward_loss
        self.compile_train_s = self.compile_infer_s = None
        if compile:
            t = time.perf_counter()
            self.train_step()
            self.compile_train_s = time.perf_counter() - t
            if inference:
                t = time.perf_counter()
                self.infer_step()
                self.compile_infer_s = time.perf_counter() - t

    def _forward_loss(self, images):
        x = (images.float() / 255.0 - self.mean) / self.std
        with self.torch.autocast(self.device, dtype=self.amp_dtype, enabled=self.amp):
            logits, scores = self.model(x)
        return torch_loss(logits, scores, self.labels, self.mask, self.weights, self.lam)

    def _sync(self):
        if self.device == "cuda":
            self.torch.cuda.synchronize()

    def train_step(self):
        self.model.train()
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss_fn(self.images)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        self._sync()

    def infer_step(self):
        self.model.eval()
        with self.torch.inference_mode():
            self.loss_fn(self.images)
        self._sync()


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


# --------------------------------------------------------------------------- JAX


class JaxBench:
    """The project's jitted train and eval steps on one synthetic batch.

    ``inference=False`` compiles no eval step (``infer_step`` is then unusable).
    """

    def __init__(
        self,
        variant,
        size,
        batch,
        dtype,
        num_classes,
        skip_stage4,
        tiny=False,
        xla_options=None,
        inference=True,
    ):
        import jax
        import numpy as np

        from chestattn_jax import sharding as shd
        from chestattn_jax.config import get_base_config
        from chestattn_jax.models import create_model
        from chestattn_jax.steps import make_eval_step, make_train_step
        from chestattn_jax.train_state import create_optimizer, create_train_state

        self.jax = jax
        config = get_base_config()
        config.model.variant, config.model.dtype = variant, dtype
        config.model.skip_unused_stage4 = skip_stage4
        config.data.classes = tuple(f"class{i}" for i in range(num_classes))
        config.data.image_size = size
        if tiny:
            config.model.stage_sizes, config.model.num_filters = (1, 1, 1, 1), 8
        self.config = config
        mesh = shd.make_mesh()
        model, tx = create_model(config), create_optimizer(config.train)
        self.state = create_train_state(
            model, tx, jax.random.key(0), (size, size, 1), shd.replicated(mesh)
        )
        rng = np.random.default_rng(0)
        batch_np = {
            "image": rng.integers(0, 256, (batch, size, size, 1), dtype=np.uint8),
            "labels": rng.integers(0, 2, (batch, num_classes)).astype(np.int32),
            "mask": np.ones((batch, num_classes), np.int32),
        }
        self.batch = shd.to_global(batch_np, shd.batch_sharded(mesh))
        weights = np.ones(num_classes, np.float32)
        options = xla_options or None
        t = time.perf_counter()
        lowered = make_train_step(config, mesh, weights).lower(self.state, self.batch)
        self.train = lowered.compile(compiler_options=options)
        self.compile_train_s = time.perf_counter() - t
        self.train_flops = step_flops(lowered)
        self.eval = self.compile_eval_s = None
        if inference:
            t = time.perf_counter()
            self.eval = (
                make_eval_step(config, mesh, weights)
                .lower(self.state, self.batch)
                .compile(compiler_options=options)
            )
            self.compile_eval_s = time.perf_counter() - t
        self.loss = None

    def train_step(self):
        self.state, metrics = self.train(self.state, self.batch)
        self.loss = self.jax.block_until_ready(metrics)["loss"]

    def infer_step(self):
        self.jax.block_until_ready(self.eval(self.state, self.batch))


def step_flops(lowered) -> float | None:
    """Floating-point operations of one call, by XLA's cost analysis of the lowered step.

    The HLO before optimisation, where every convolution is still a convolution op: the
    compiled GPU step calls cuDNN through custom calls, which the analysis counts as 0.
    """
    try:
        cost = lowered.cost_analysis()
    except Exception:  # not every backend and version offers it
        return None
    if isinstance(cost, list | tuple):
        cost = cost[0] if cost else None
    flops = (cost or {}).get("flops")
    return float(flops) if flops and flops > 0 else None


def measure_peak_tflops(dtype: str) -> float:
    """TFLOP/s of a large square matrix product in ``dtype``: the ceiling a model can reach.

    8192 on an accelerator, 1024 on a CPU; random inputs (zeros run faster); the median of
    ten timed products after three warm-ups.
    """
    import jax
    import jax.numpy as jnp

    n = 1024 if jax.devices()[0].platform == "cpu" else 8192
    ka, kb = jax.random.split(jax.random.key(0))
    a = jax.random.normal(ka, (n, n), getattr(jnp, dtype))
    b = jax.random.normal(kb, (n, n), getattr(jnp, dtype))
    matmul = jax.jit(jnp.matmul)
    for _ in range(3):
        matmul(a, b).block_until_ready()
    times = []
    for _ in range(10):
        t = time.perf_counter()
        matmul(a, b).block_until_ready()
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times) / 1e12


# --------------------------------------------------------------------------- timing


def timed(fns: dict, steps: int, warmup: int, cpu: dict | None = None) -> dict:
    """Median seconds per call of each function, the functions alternating step by step.

    ``cpu``, when given, receives the median CPU seconds of this process per call (all
    threads): a measure of work that background load on a shared machine disturbs less.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {name: [] for name in fns}
    cpu_times = {name: [] for name in fns}
    for _ in range(steps):
        for name, fn in fns.items():
            t, c = time.perf_counter(), time.process_time()
            fn()
            times[name].append(time.perf_counter() - t)
            cpu_times[name].append(time.process_time() - c)
    if cpu is not None:
        cpu.update({name: statistics.median(ts) for name, ts in cpu_times.items()})
    return {name: statistics.median(ts) for name, ts in times.items()}


def machine() -> str:
    import jax

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    parts = [f"{cpu}, {os.cpu_count()} cores"]
    if hasattr(os, "getloadavg"):
        # Other processes on the machine slow both frameworks, OpenMP's PyTorch the most.
        parts.append(f"load average {os.getloadavg()[0]:.1f} at the start")
    device = jax.devices()[0]
    if device.platform != "cpu":
        parts.append(f"{len(jax.devices())} x {device.device_kind}")
    parts.append(f"jax {jax.__version__}")
    if torch_available():
        import torch

        parts.append(f"torch {torch.__version__} ({torch.get_num_threads()} threads)")
    return "; ".join(parts)


def main(argv):
    del argv
    if FLAGS.quick:
        FLAGS.sizes, FLAGS.batch_sizes, FLAGS.dtypes = ["128"], ["8"], ["float32"]
        FLAGS.steps, FLAGS.warmup = 3, 1
    use_torch = torch_available() if FLAGS.torch is None else FLAGS.torch
    if FLAGS.torch and not torch_available():
        sys.exit("--torch: torch cannot be imported.")
    sizes = [int(s) for s in FLAGS.sizes]
    batches = [int(b) for b in FLAGS.batch_sizes]
    if len(batches) == 1:
        batches *= len(sizes)
    if len(batches) != len(sizes):
        sys.exit("--batch_sizes: one value, or one per entry of --sizes.")

    import jax

    where = machine()
    print(where, "| XLA_FLAGS:", os.environ.get("XLA_FLAGS", ""), flush=True)
    if FLAGS.compare_xla:
        return compare_xla(where, sizes, batches, json.loads(FLAGS.compare_xla))
    modes = [m.strip() for m in FLAGS.torch_modes if m.strip()] if use_torch else []
    if unknown := set(modes) - {"eager", "compile"}:
        sys.exit(f"--torch_modes: unknown mode(s) {sorted(unknown)}; eager and compile exist.")
    peaks = {}
    rows = []
    for size, batch in zip(sizes, batches, strict=True):
        for dtype in FLAGS.dtypes:
            if dtype not in peaks:
                peaks[dtype] = FLAGS.peak_tflops or measure_peak_tflops(dtype)
                print(f"peak ({dtype} matrix product): {peaks[dtype]:.1f} TFLOP/s", flush=True)
            for variant in FLAGS.variants:
                jb = JaxBench(
                    variant,
                    size,
                    batch,
                    dtype,
                    FLAGS.num_classes,
                    FLAGS.skip_unused_stage4,
                    tiny=FLAGS.tiny,
                    inference=FLAGS.inference,
                )
                train, infer = {"jax": jb.train_step}, {"jax": jb.infer_step}
                compile_s = {"jax": jb.compile_train_s}
                for mode in modes:
                    c = jb.config
                    tb = TorchBench(
                        variant,
                        size,
                        batch,
                        dtype,
                        FLAGS.num_classes,
                        FLAGS.skip_unused_stage4,
                        c.data.mean,
                        c.data.std,
                        c.loss.entropy_weight,
                        compile=mode == "compile",
                        inference=FLAGS.inference,
                    )
                    train[mode], infer[mode] = tb.train_step, tb.infer_step
                    if tb.compile_train_s is not None:
                        compile_s[mode] = tb.compile_train_s
                t_train = timed(train, FLAGS.steps, FLAGS.warmup)
                t_infer = timed(infer, FLAGS.steps, FLAGS.warmup) if FLAGS.inference else {}
                tflops = jb.train_flops / t_train["jax"] / 1e12 if jb.train_flops else None
                row = dict(
                    variant=variant,
                    size=size,
                    batch=batch,
                    dtype=dtype,
                    compile_s=compile_s,
                    tflops=tflops,
                    peak=peaks[dtype],
                    **{f"train_{k}": batch / v for k, v in t_train.items()},
                    **{f"infer_{k}": batch / v for k, v in t_infer.items()},
                )
                rows.append(row)
                print(format_row(row, modes), flush=True)
                del jb, train, infer
                jax.clear_caches()
                if modes and "torch" in sys.modules:
                    import torch

                    del tb
                    if torch.cuda.is_available():
                        torch.cuda.empty_cache()
    flags_used = os.environ.get("XLA_FLAGS", "") or "(none)"
    peak_text = ", ".join(f"{d} {p:.4g}" for d, p in peaks.items())
    table = "\n".join(
        [
            f"### {datetime.date.today().isoformat()}: {where}",
            "",
            f"`python {' '.join(sys.argv)}`; XLA_FLAGS: `{flags_used}`; "
            f"skip_unused_stage4={FLAGS.skip_unused_stage4}; median of {FLAGS.steps} steps "
            f"after {FLAGS.warmup} warm-up, JAX and PyTorch steps alternating. TFLOP/s: XLA's "
            f"count of the train step's operations (lowered HLO) over its time; % peak: of a "
            f"large matrix product measured here (TFLOP/s: {peak_text}"
            f"{', given' if FLAGS.peak_tflops else ''}).",
            "",
            table_header(modes),
            *(format_row(r, modes) for r in rows),
            "",
        ]
    )
    print("\n" + table)
    append(table)


def append(table: str):
    if FLAGS.output:
        new = not os.path.exists(FLAGS.output)
        with open(FLAGS.output, "a") as f:
            if new:
                f.write(HEADER)
            f.write("\n" + table)


def compare_xla(where: str, sizes, batches, option_sets: dict):
    """The JAX train step under each set of XLA options, interleaved in one process."""
    import jax

    rows = []
    for size, batch in zip(sizes, batches, strict=True):
        for dtype in FLAGS.dtypes:
            for variant in FLAGS.variants:
                benches = {
                    label: JaxBench(
                        variant,
                        size,
                        batch,
                        dtype,
                        FLAGS.num_classes,
                        FLAGS.skip_unused_stage4,
                        tiny=FLAGS.tiny,
                        xla_options=options,
                    )
                    for label, options in option_sets.items()
                }
                cpu = {}
                wall = timed(
                    {k: b.train_step for k, b in benches.items()}, FLAGS.steps, FLAGS.warmup, cpu
                )
                first = next(iter(option_sets))
                for label, b in benches.items():
                    rows.append(
                        f"| {'tiny' if FLAGS.tiny else 'ResNet-50'} {variant} | {size} | {batch} "
                        f"| {dtype} | {label} | `{json.dumps(option_sets[label])}` "
                        f"| {batch / wall[label]:.1f} | {cpu[label]:.3f} "
                        f"| {wall[first] / wall[label]:.2f} | {cpu[first] / cpu[label]:.2f} "
                        f"| {float(b.loss):.7f} |"
                    )
                    print(rows[-1], flush=True)
                del benches
                jax.clear_caches()
    table = "\n".join(
        [
            f"### {datetime.date.today().isoformat()}: XLA options, {where}",
            "",
            f"`python {' '.join(sys.argv)}`; XLA_FLAGS: `{os.environ.get('XLA_FLAGS', '')}`; "
            f"median of {FLAGS.steps} train steps after {FLAGS.warmup} warm-up, the settings "
            "alternating step by step in one process; speed-ups relative to the first row of "
            "each block; the loss after the last step shows whether results moved.",
            "",
            "| model | px | batch | dtype | setting | XLA options | train img/s | CPU s/step "
            "| speed-up (wall) | speed-up (CPU) | loss |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
            *rows,
            "",
        ]
    )
    print("\n" + table)
    append(table)


HEADER = """# Benchmarks

Images/s of the jitted train step (forward, Eq. 5, backward, Adam; state donated) and of
the inference step, from `benchmarks/train_step.py`, beside an eager PyTorch reference of
the same model. Synthetic in-memory batches; input-pipeline figures are in the README.
"""


MODE_NAMES = {"eager": "PyTorch eager", "compile": "PyTorch compiled"}


def table_header(modes) -> str:
    torch_cols = [f"{MODE_NAMES[m]} {what}" for what in ("train img/s",) for m in modes]
    infer_cols = [f"{MODE_NAMES[m]} infer img/s" for m in modes]
    compile_cols = [f"{MODE_NAMES[m]} compile s" for m in modes if m == "compile"]
    cols = [
        "variant",
        "px",
        "batch",
        "dtype",
        "JAX compile s",
        *compile_cols,
        "JAX train img/s",
        *torch_cols,
        *(["train JAX/best PT"] if modes else []),
        "JAX TFLOP/s",
        "% peak",
        "JAX infer img/s",
        *infer_cols,
        *(["infer JAX/best PT"] if modes else []),
    ]
    return "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols)


def format_row(r: dict, modes=("eager",)) -> str:
    def num(key):
        return f"{r[key]:.1f}" if r.get(key) is not None else "-"

    def best_ratio(kind):
        best = max((r[f"{kind}_{m}"] for m in modes if f"{kind}_{m}" in r), default=None)
        return f"{r[f'{kind}_jax'] / best:.2f}" if best and f"{kind}_jax" in r else "-"

    compile_s = r["compile_s"]
    tflops = r.get("tflops")
    cells = [
        r["variant"],
        str(r["size"]),
        str(r["batch"]),
        r["dtype"],
        f"{compile_s['jax']:.1f}",
        *(f"{compile_s.get(m, 0):.1f}" for m in modes if m == "compile"),
        num("train_jax"),
        *(num(f"train_{m}") for m in modes),
        *([best_ratio("train")] if modes else []),
        f"{tflops:.1f}" if tflops else "-",
        f"{100 * tflops / r['peak']:.0f}%" if tflops and r.get("peak") else "-",
        num("infer_jax"),
        *(num(f"infer_{m}") for m in modes),
        *([best_ratio("infer")] if modes else []),
    ]
    return "| " + " | ".join(cells) + " |"


if __name__ == "__main__":
    app.run(main)
