"""Where one train step's time goes: a profiler trace and the compiled HLO, summarised.

Builds the same jitted train step as ``benchmarks/train_step.py`` (one synthetic batch),
runs ``--warmup`` steps, then traces ``--steps`` steps with ``jax.profiler`` and writes
into ``--out``:

- ``perfetto_trace.json.gz``: the trace (open it in ui.perfetto.dev);
- ``step.hlo.txt.gz``: the optimised HLO of the step;
- ``profile.md``: device time per kernel (top ``--top``), per kind of kernel
  (convolution, matrix product, fusion, layout transpose or copy, reduction, other),
  the device's busy fraction of the traced wall time, and counts of the HLO's layout
  changes (transposes, copies) and convolutions by layout.

  python benchmarks/profile_step.py --variant=class --size=224 --batch=256 \
      --dtype=bfloat16 --steps=5 --out=/tmp/profile

On a CPU the "device" rows are XLA's CPU thunks; the script runs there for testing.
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_step import JaxBench  # also defines --steps, --warmup, --tiny

FLAGS = flags.FLAGS
flags.DEFINE_string("variant", "class", "resnet | image | class")
flags.DEFINE_integer("size", 224, "Image size (square, pixels).")
flags.DEFINE_integer("batch", 256, "Global batch size.")
flags.DEFINE_string("dtype", "bfloat16", "Compute dtype.")
flags.DEFINE_integer("top", 25, "Kernels listed by device time.")
flags.DEFINE_string("out", None, "Folder for the trace, the HLO and profile.md.")
flags.DEFINE_string(
    "summarize",
    None,
    "Only summarise an existing perfetto_trace.json.gz (and step.hlo.txt.gz beside it) "
    "of --steps steps; print the tables.",
)

KINDS = (
    # (kind, pattern on the lower-cased kernel or thunk name); the first match wins.
    ("layout transpose/copy", r"nchwtonhwc|nhwctonchw|transpose|copy"),
    ("convolution (cuDNN)", r"xmma|implicit_gemm|convolve|convolution|fprop|dgrad|wgrad|cudnn"),
    ("matrix product", r"nvjet|gemm|cublas|cutlass|dot|matmul"),
    ("scatter (max-pool gradient)", r"scatter|select_and_scatter"),
    ("reduction fusion (BatchNorm statistics, ...)", r"reduce|reduction"),
    ("elementwise fusion", r"fusion|loop_|input_"),
    ("memset / memcpy", r"memset|memcpy"),
)


def kind_of(name: str) -> str:
    lowered = name.lower()
    for kind, pattern in KINDS:
        if re.search(pattern, lowered):
            return kind
    return "other"


def summarize_trace(path: str, steps: int, top: int) -> list[str]:
    """Markdown lines: device time per kernel and per kind, from a perfetto JSON trace."""
    with gzip.open(path, "rt") as f:
        trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    process_names = {
        e["pid"]: e["args"]["name"]
        for e in events
        if e.get("ph") == "M" and e.get("name") == "process_name"
    }
    thread_names = {
        (e["pid"], e.get("tid")): e["args"]["name"]
        for e in events
        if e.get("ph") == "M" and e.get("name") == "thread_name"
    }
    devices = {pid for pid, name in process_names.items() if re.search(r"/device:(GPU|TPU)", name)}
    on_cpu = not devices
    if on_cpu:  # XLA:CPU runs its thunks on host threads: take the XLA op events there
        devices = set(process_names)
    spans = [
        e
        for e in events
        if e.get("ph") == "X"
        and e.get("pid") in devices
        and "dur" in e
        and not e["name"].startswith(("$", "Thunk", "PjRt", "TfrtCpu", "ThreadPool"))
    ]
    if not spans:
        return ["No device events in the trace."]
    per_line = collections.Counter()
    for e in spans:
        per_line[(e["pid"], e.get("tid"))] += e["dur"]
    line_rows = [
        f"| {process_names.get(pid, pid)} | {thread_names.get((pid, tid), tid)} "
        f"| {t / 1e3 / steps:.2f} |"
        for (pid, tid), t in per_line.most_common(12)
    ]
    # Device streams hold the kernels; derived lines (XLA Ops, XLA Modules, ...) repeat them.
    streams = {
        key for key in per_line if re.search(r"stream", str(thread_names.get(key, "")), re.I)
    }
    if streams:
        spans = [e for e in spans if (e["pid"], e.get("tid")) in streams]
    per_kernel = collections.defaultdict(lambda: [0.0, 0])
    for e in spans:
        per_kernel[e["name"]][0] += e["dur"]
        per_kernel[e["name"]][1] += 1
    total = sum(t for t, _ in per_kernel.values())
    start = min(e["ts"] for e in spans)
    end = max(e["ts"] + e["dur"] for e in spans)
    per_kind = collections.Counter()
    for name, (t, _) in per_kernel.items():
        per_kind[kind_of(name)] += t
    lines = [
        f"Traced {steps} steps: {total / 1e3 / steps:.2f} ms of device kernel time per step, "
        f"over {(end - start) / 1e3 / steps:.2f} ms of wall time per step from the first "
        f"kernel to the last (busy {100 * total / max(end - start, 1e-9):.0f}%, counting "
        f"overlapping streams twice); {sum(n for _, n in per_kernel.values()) // steps} "
        "kernels per step.",
        "",
        "| trace line | of | ms/step |",
        "|---|---|---|",
        *line_rows,
        "",
        f"Kernels counted: {'the device streams' if streams else 'every line above'}.",
        "",
        "| kind | ms/step | share |",
        "|---|---|---|",
        *(
            f"| {k} | {t / 1e3 / steps:.2f} | {100 * t / total:.1f}% |"
            for k, t in per_kind.most_common()
        ),
        "",
        f"| kernel (top {top}) | kind | calls/step | ms/step | share |",
        "|---|---|---|---|---|",
    ]
    ranked = sorted(per_kernel.items(), key=lambda kv: -kv[1][0])[:top]
    for name, (t, n) in ranked:
        short = name if len(name) < 90 else name[:87] + "..."
        lines.append(
            f"| `{short}` | {kind_of(name)} | {n / steps:g} | {t / 1e3 / steps:.3f} "
            f"| {100 * t / total:.1f}% |"
        )
    return lines


def summarize_hlo(text: str) -> list[str]:
    """Counts of layout changes and of convolutions by their layouts in optimised HLO."""
    ops = collections.Counter()
    conv_layouts = collections.Counter()
    for line in text.splitlines():
        m = re.search(r"=\s*(?:\([^=]*?\)|\S+)\s+([a-z][\w-]*)\(", line)
        if not m:
            continue
        op = m.group(1)
        ops[op] += 1
        if op == "custom-call" and "conv" in line.lower():
            target = re.search(r'custom_call_target="([^"]+)"', line)
            dims = re.search(r"dim_labels=(\S+?)[,}]", line)
            conv_layouts[
                f"{target.group(1) if target else '?'} {dims.group(1) if dims else ''}"
            ] += 1
        elif op == "convolution":
            dims = re.search(r"dim_labels=(\S+?)[,}]", line)
            conv_layouts[f"convolution {dims.group(1) if dims else ''}"] += 1
    lines = [
        "| HLO instruction | count |",
        "|---|---|",
        *(
            f"| {op} | {ops[op]} |"
            for op in ("transpose", "copy", "fusion", "custom-call", "convolution", "all-reduce")
            if ops[op]
        ),
        "",
        "| convolution (target, dim_labels) | count |",
        "|---|---|",
        *(f"| {k} | {n} |" for k, n in conv_layouts.most_common()),
    ]
    return lines


def main(argv):
    del argv
    if FLAGS.summarize:
        lines = summarize_trace(FLAGS.summarize, FLAGS.steps, FLAGS.top)
        hlo = os.path.join(os.path.dirname(FLAGS.summarize), "step.hlo.txt.gz")
        if os.path.exists(hlo):
            with gzip.open(hlo, "rt") as f:
                lines += ["", *summarize_hlo(f.read())]
        print("\n".join(lines))
        return
    if not FLAGS.out:
        sys.exit("--out is required.")
    import jax

    os.makedirs(FLAGS.out, exist_ok=True)
    jb = JaxBench(FLAGS.variant, FLAGS.size, FLAGS.batch, FLAGS.dtype, 14, True, tiny=FLAGS.tiny)
    hlo = jb.train.as_text()
    with gzip.open(os.path.join(FLAGS.out, "step.hlo.txt.gz"), "wt") as f:
        f.write(hlo)
    for _ in range(FLAGS.warmup):
        jb.train_step()
    trace_dir = tempfile.mkdtemp(prefix="profile_step_")
    t = time.perf_counter()
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
        for _ in range(FLAGS.steps):
            jb.train_step()
    wall = (time.perf_counter() - t) / FLAGS.steps
    found = glob.glob(os.path.join(trace_dir, "**", "perfetto_trace.json.gz"), recursive=True)
    lines = [
        f"# Train step profile: {FLAGS.variant}, {FLAGS.size} px, batch {FLAGS.batch}, "
        f"{FLAGS.dtype}, on {jax.devices()[0].device_kind} (jax {jax.__version__})",
        "",
        f"Host wall time per traced step (tracing on): {1e3 * wall:.2f} ms "
        f"({FLAGS.batch / wall:.0f} images/s); compile {jb.compile_train_s:.1f} s.",
        "",
    ]
    if found:
        os.replace(found[0], os.path.join(FLAGS.out, "perfetto_trace.json.gz"))
        lines += summarize_trace(
            os.path.join(FLAGS.out, "perfetto_trace.json.gz"), FLAGS.steps, FLAGS.top
        )
    else:
        lines.append("No perfetto trace was written.")
    lines += ["", *summarize_hlo(hlo), ""]
    with open(os.path.join(FLAGS.out, "profile.md"), "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    app.run(main)
