"""VinDr-CXR (its 22 local findings and 5 global labels, with the radiologists' boxes for
localisation), ResNet-50 at 224 px, tested on its official test set.

  python -m chestattn_jax.main --config=configs/vindr_cxr.py:class --workdir=W \
      --config.data.data_dir=/path/to/prepared/vindr_cxr

The argument after ``:`` picks the variant (resnet | image | class; default class).
"""

from chestattn_jax.config import get_base_config, with_variant
from chestattn_jax.data.vindr_cxr import SOURCE


def get_config(arg=None):
    config = get_base_config()
    config.data.name = SOURCE.name
    config.data.classes = SOURCE.classes
    config.data.split = "official"
    return with_variant(config, arg)
