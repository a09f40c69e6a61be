"""The optimizer: OpenOOD's SGD recipe as an optax chain.

``torch.optim.SGD(lr, momentum, nesterov=True, weight_decay=wd)`` adds ``wd * p`` to the
gradient before the momentum (coupled L2), and OpenOOD steps a ``LambdaLR`` cosine every
iteration down to ``min_lr``. The optax equivalent is ``add_decayed_weights`` ->
``sgd(nesterov)`` with ``cosine_decay_schedule`` (tested step by step against torch in
``tests/train/test_losses.py``). A classifier-specific L2 (ISH: 5e-5 on ``fc``) uses two
masked ``add_decayed_weights``, with the masks given as functions of the parameter tree.
"""

from __future__ import annotations

from typing import Any

import jax
import optax

from jaxood.train.config import TrainConfig

HEAD = "fc"  # the classifier's parameter collection in every jaxood CIFAR/ImageNet CNN


def learning_rate_schedule(cfg: TrainConfig, total_steps: int) -> optax.Schedule:
    """Per-step cosine from ``lr`` to ``min_lr`` over ``total_steps`` (then flat).

    ``min_lr + (lr - min_lr) * (1 + cos(pi * t / T)) / 2`` = OpenOOD's ``cosine_annealing``.
    """
    return optax.cosine_decay_schedule(cfg.lr, max(int(total_steps), 1), alpha=cfg.min_lr / cfg.lr)


def _head_mask(params: Any, head: bool) -> Any:
    """``True`` on the classifier's leaves when ``head`` (on all others when not)."""
    if HEAD not in params:
        raise ValueError(
            f"fc_weight_decay (also implied by ish) needs a '{HEAD}' classifier; the model's "
            f"parameters are {sorted(params)}"
        )
    return {k: jax.tree.map(lambda _, m=((k == HEAD) == head): m, v) for k, v in params.items()}


def make_optimizer(cfg: TrainConfig, total_steps: int) -> optax.GradientTransformation:
    """Coupled L2 -> SGD (PyTorch's momentum/Nesterov form, dampening 0) -> ``-lr_t``."""
    sgd = optax.sgd(
        learning_rate_schedule(cfg, total_steps),
        momentum=cfg.momentum or None,
        nesterov=cfg.nesterov and cfg.momentum > 0,
    )
    fc_decay = cfg.classifier_weight_decay()
    if fc_decay is None:
        return optax.chain(optax.add_decayed_weights(cfg.weight_decay), sgd)
    return optax.chain(
        optax.add_decayed_weights(cfg.weight_decay, mask=lambda p: _head_mask(p, False)),
        optax.add_decayed_weights(fc_decay, mask=lambda p: _head_mask(p, True)),
        sgd,
    )
