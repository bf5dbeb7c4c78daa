"""Our backbone on converted weights computes what torchvision's ``resnet50`` computes.

Runs only where torch and torchvision import (``pip install -e '.[parity]'``). Random
weights, with BatchNorm statistics and affine parameters randomised so that no BatchNorm is
the identity, in eval mode; the weights travel through a ``.pth`` file and the converter.
Two input shapes, one ResNet-50 compile each:

- 2 x 224 x 224 RGB against torchvision directly;
- 1 x 193 x 225 grayscale (the summed stem) against torchvision fed the image repeated on
  three channels. 193 x 225 makes every stride-2 layer see an odd size (97 x 113, 49 x 57,
  25 x 29, 13 x 15, 7 x 8), where asymmetric ('SAME'-style) padding would differ from
  torchvision's, and H != W catches swapped spatial axes.

The logits of torchvision's ``fc`` (copied into the ``resnet`` variant's classifier) and the
pooled 2048 features g are compared relative to their largest magnitude.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

import jax  # noqa: E402

from chestattn_jax.models import ChestAttentionNet  # noqa: E402
from chestattn_jax.models.convert import read_state_dict, replace_backbone  # noqa: E402

RTOL = 1e-4


@pytest.fixture(scope="module")
def torch_resnet50(tmp_path_factory):
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = torchvision.models.resnet50(weights=None).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0.0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.1)
    path = tmp_path_factory.mktemp("weights") / "resnet50.pth"
    torch.save(model.state_dict(), path)
    return model, str(path)


def run_both(torch_resnet50, shape):
    """(ours, torchvision) as ``{"logits": (B, 1000), "g": (B, 2048)}`` for ``(B, H, W, C)``."""
    model, path = torch_resnet50
    x = np.random.default_rng(1).standard_normal(shape, dtype=np.float32)
    net = ChestAttentionNet(num_classes=1000, variant="resnet")
    shapes = jax.eval_shape(lambda: net.init(jax.random.key(0), x))
    sd = read_state_dict(path)
    params, stats, report = replace_backbone(
        shapes["params"], shapes["batch_stats"], sd, source=path
    )
    assert report.stem == ("summed RGB -> 1" if shape[-1] == 1 else "as is")
    params = {**params, "classifier": {"kernel": sd["fc.weight"].T, "bias": sd["fc.bias"]}}
    logits, aux = jax.jit(net.apply)({"params": params, "batch_stats": stats}, x)
    ours = {"logits": np.asarray(logits), "g": np.asarray(aux["global"])}

    pooled = {}
    hook = model.avgpool.register_forward_hook(lambda m, i, o: pooled.update(g=o.flatten(1)))
    x_rgb = np.repeat(x, 3 // shape[-1], axis=-1).transpose(0, 3, 1, 2)
    with torch.no_grad():
        ref_logits = model(torch.from_numpy(np.ascontiguousarray(x_rgb)))
    hook.remove()
    return ours, {"logits": ref_logits.numpy(), "g": pooled["g"].numpy()}


def assert_parity(ours, ref, label):
    for name in ("logits", "g"):
        assert ours[name].shape == ref[name].shape, (label, name)
        scale = np.abs(ref[name]).max()
        err = np.abs(ours[name] - ref[name]).max() / scale
        print(f"parity {label} {name}: max |ours - torchvision| / max |torchvision| = {err:.2e}")
        assert scale > 0 and err < RTOL, (label, name, err)
        np.testing.assert_allclose(ours[name], ref[name], rtol=RTOL, atol=RTOL * scale)


@pytest.mark.slow
def test_rgb_224_matches_torchvision(torch_resnet50):
    assert_parity(*run_both(torch_resnet50, (2, 224, 224, 3)), "rgb 2x224x224")


@pytest.mark.slow
def test_grayscale_odd_size_matches_torchvision_on_repeated_image(torch_resnet50):
    assert_parity(*run_both(torch_resnet50, (1, 193, 225, 1)), "gray 1x193x225")
