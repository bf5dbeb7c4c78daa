"""MIMIC-CXR-JPG (CheXpert's 11 observations, as the paper's CheXpert), ResNet-50 at 224 px.

  python -m chestattn_jax.main --config=configs/mimic_cxr.py:class --workdir=W \
      --config.data.data_dir=/path/to/prepared/mimic_cxr

The argument after ``:`` picks the variant (resnet | image | class; default class).
"""

from chestattn_jax.config import get_base_config, with_variant
from chestattn_jax.data.classes import CHEXPERT_CLASSES


def get_config(arg=None):
    config = get_base_config()
    config.data.name = "mimic_cxr"
    config.data.classes = CHEXPERT_CLASSES
    return with_variant(config, arg)
