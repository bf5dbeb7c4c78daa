"""The regularised multi-label loss of Sriker et al. (Eq. 5) and its class weights."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

CLASS_WEIGHT_SCHEMES = ("paper", "inverse_frequency", "none")


def check_config(p, mode: str) -> None:
    """The rules of ``config.loss``, added to ``p`` (a
    :class:`chestattn_jax.config_checks.Problems`)."""
    p.choice("loss.class_weights", CLASS_WEIGHT_SCHEMES)
    p.non_negative("loss.entropy_weight")


def class_weights(positives, num_examples, scheme: str, class_names=None) -> np.ndarray:
    """Per-class weights ``c_i`` of the positive term of Eq. 5, from training-split counts.

    Args:
      positives: ``(k,)`` positive count ``n_i`` of each class in the training split
        (masked-out labels not counted).
      num_examples: N, the number of training examples; or ``(k,)``, per class the
        training examples where it is labelled (a masked label is neither a positive nor a
        negative: an uncertain label under ``ignore``, a class a set of a mixture lacks).
      scheme: ``paper`` (``c_i = n_min**2 / n_i`` as printed in the paper, with
        ``n_min`` the smallest ``n_i``), ``inverse_frequency`` (``c_i = (N - n_i) / n_i``)
        or ``none`` (``c_i = 1``).
      class_names: used only to name a class without positives in the error.

    Returns:
      ``(k,)`` float32 weights.
    """
    if scheme not in CLASS_WEIGHT_SCHEMES:
        raise ValueError(
            f"Unknown class-weight scheme {scheme!r} (config.loss.class_weights); expected one "
            f"of {', '.join(CLASS_WEIGHT_SCHEMES)}."
        )
    n = np.asarray(positives, np.float64)
    if scheme == "none":
        return np.ones_like(n, np.float32)
    if np.any(n <= 0):
        names = class_names or [str(i) for i in range(len(n))]
        empty = [names[i] for i in np.flatnonzero(n <= 0)]
        raise ValueError(
            f"Class weights {scheme!r} need at least one positive training example per class; "
            f"none for: {', '.join(empty)}. Use config.loss.class_weights='none' or more data."
        )
    if scheme == "paper":
        return (n.min() ** 2 / n).astype(np.float32)
    return ((np.asarray(num_examples, np.float64) - n) / n).astype(np.float32)


def attention_entropy(log_weights):
    """Shannon entropy (nats) of attention maps over positions.

    Args:
      log_weights: ``(..., H, W)`` unnormalised log-weights; the map is their softmax
        over the last two axes. Computed by log-softmax, so never ``log(0)``.

    Returns:
      ``(...)`` entropies, between 0 and ``log(H * W)``.
    """
    flat = log_weights.reshape(*log_weights.shape[:-2], -1).astype(jnp.float32)
    log_p = jax.nn.log_softmax(flat, axis=-1)
    return -jnp.sum(jnp.exp(log_p) * log_p, axis=-1)


def regularized_loss(
    logits,
    labels,
    mask,
    weights,
    class_log_attention=None,
    entropy_weight: float = 0.0,
):
    """Eq. 5 for a batch of n images and k classes.

    ``L = -(1/n) Σ_t Σ_i m_ti [c_i y_ti log p_ti + (1 - y_ti)(log(1 - p_ti) + λ H(w_3i(x_t)))]``

    Args:
      logits: ``(n, k)``; ``p = sigmoid(logits)``, in log-sigmoid form.
      labels: ``(n, k)`` in {0, 1}.
      mask: ``(n, k)`` in {0, 1}; 0 drops that label (uncertain, padding).
      weights: ``(k,)`` class weights ``c_i``.
      class_log_attention: ``(n, k, H, W)`` log-weights of the class maps, or None
        (then the entropy term is absent, as for the ``resnet`` and ``image`` models).
      entropy_weight: λ.

    Returns:
      ``(loss, parts)``: the scalar float32 loss and a dict of its pieces
      (``bce``: the classification part; ``entropy``: the mean entropy of the
      negative classes' maps, 0 without maps).
    """
    logits = logits.astype(jnp.float32)
    labels = labels.astype(jnp.float32)
    mask = mask.astype(jnp.float32)
    n = logits.shape[0]
    log_p = jax.nn.log_sigmoid(logits)
    log_not_p = jax.nn.log_sigmoid(-logits)
    classification = weights * labels * log_p + (1.0 - labels) * log_not_p
    bce = -jnp.sum(mask * classification) / n
    negatives = mask * (1.0 - labels)
    if class_log_attention is None:
        entropy_term = jnp.zeros((), jnp.float32)
        mean_entropy = jnp.zeros((), jnp.float32)
    else:
        h = attention_entropy(class_log_attention)
        entropy_term = -entropy_weight * jnp.sum(negatives * h) / n
        mean_entropy = jnp.sum(negatives * h) / jnp.maximum(jnp.sum(negatives), 1.0)
    return bce + entropy_term, {"bce": bce, "entropy": mean_entropy}
