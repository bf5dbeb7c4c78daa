"""SIIM-ACR Pneumothorax (its one class, with mask truth for localisation), ResNet-50 at
224 px.

  python -m chestattn_jax.main --config=configs/siim_pneumothorax.py:class --workdir=W \
      --config.data.data_dir=/path/to/prepared/siim_pneumothorax

The argument after ``:`` picks the variant (resnet | image | class; default class).
"""

from chestattn_jax.config import get_base_config, with_variant
from chestattn_jax.data.siim_pneumothorax import SOURCE


def get_config(arg=None):
    config = get_base_config()
    config.data.name = SOURCE.name
    config.data.classes = SOURCE.classes
    return with_variant(config, arg)
