"""``report.html``: the evaluation on one page that opens from disk with no network
(:mod:`chestattn_jax.reporting.html_report` renders it). It runs after every other
evaluator and shows what they added to ``metrics`` and the figures they wrote: what was
evaluated, a reporting checklist, the per-class table and ROC curves, localisation
beside its baselines, a gallery of the figures evaluator's example images with each
class's map and the truth outlined, and the sections other evaluators fill
(``calibration``, ``operating_points``, ``subgroups``, ``failures``), each "not
available" with the reason where absent.

Every image is embedded in the page (``data:`` URIs), so that ``report.html`` is the one
file to copy or download; the gallery is bounded by ``config.eval.num_figure_images``.
"""

from __future__ import annotations

import os

import numpy as np
from etils import epath

from chestattn_jax import files
from chestattn_jax import workdir as workdir_lib
from chestattn_jax.evaluation import evaluators
from chestattn_jax.reporting import html_blocks, html_report

REPORT_FILE = "report.html"


class Evaluator(evaluators.Evaluator):
    # Last: the page shows what every other chosen evaluator added.
    after = tuple(n for n in evaluators.available() if n != __name__.rsplit(".", 1)[-1])
    outputs = (REPORT_FILE,)

    def finish(self, record, metrics) -> None:
        if not self.ctx.writes:
            return
        out = epath.Path(self.ctx.out_dir)
        names = [*html_report.FIGURES, *_section_figures(metrics)]
        images = {n: html_blocks.file_uri(out / n) for n in names if (out / n).exists()}
        text = html_report.render(metrics, images=images, gallery=self._gallery(record, metrics))
        workdir_lib.write_text(os.fspath(out / REPORT_FILE), text)

    def _gallery(self, record, metrics) -> dict:
        """The figures evaluator's examples (``attention_examples.npz``) with their truth
        masks where the split has them, or why there are none."""
        path = epath.Path(self.ctx.out_dir) / workdir_lib.ATTENTION_EXAMPLES_FILE
        if "figures" not in (metrics.get("evaluators") or ()):
            return {"unavailable": "the figures evaluator, which picks the examples, did not run."}
        if self.ctx.config.model.variant == "resnet":
            return {"unavailable": "the resnet variant has no attention maps."}
        if not path.exists():
            count = self.ctx.config.eval.num_figure_images
            return {
                "unavailable": f"no example images (config.eval.num_figure_images = {count}, "
                "or no image of the split has a finding)."
            }
        ex = files.read_npz(path)
        index = np.asarray(ex["index"], np.int64)
        classes = list(record.classes)
        threshold, how = html_report.thresholds(metrics, classes)
        examples = html_report.gallery_examples(
            classes,
            index,
            ex["images"],
            ex["maps"],
            record.labels[index],
            record.mask[index],
            record.probs[index],
            threshold,
            self._truth(index),
        )
        maps = "each class's map" if ex["maps"].ndim == 4 else "the image's one map"
        note = (
            f"The first {len(index)} images of the {metrics.get('split', 'evaluated')} split "
            f"with a finding (the figures evaluator's), {maps} over the image (jet, divided by "
            "its maximum) for each class, its truth outlined in white where the split has "
            f"truth. Outcomes {how}."
        )
        return {"note": note, "examples": examples}

    def _truth(self, index) -> list | None:
        """Each example's truth masks ``(k, S, S)``, ``None`` for one without truth;
        ``None`` where the split has no localisation truth."""
        rows = getattr(self.ctx.source, "truth_indices", None)
        if rows is None:
            return None
        rows = set(np.asarray(rows()).tolist())
        return [self.ctx.source.truth(int(i))["masks"] if i in rows else None for i in index]


def _section_figures(metrics: dict) -> list[str]:
    """The files the other sections' ``figures`` name (names in this folder only)."""
    names = []
    for key in html_report.SECTIONS:
        section = html_report.section(metrics, key)
        for f in (section.get("figures") or []) if isinstance(section, dict) else []:
            name = str(f.get("file", ""))
            if name and os.path.basename(name) == name:
                names.append(name)
    return names
