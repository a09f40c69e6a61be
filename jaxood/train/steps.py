"""What one training / evaluation step computes: ``TrainState``, ``train_step``, ``eval_step``.

Both steps are pure functions of their arguments (``jax.jit`` them with the static
:class:`StepConfig` bound by ``functools.partial``). Every random number of a step comes
from ``fold_in(PRNGKey(seed), state.step)``, so a step is reproducible from the state alone
(this is what makes a resumed run bit-identical to an uninterrupted one).

Mixed precision (``precision="bf16"``): the float32 parameters are cast to bfloat16 inside
the differentiated function (so gradients, the optimizer state and the update stay float32),
except BatchNorm's scale/bias; the images enter in bfloat16, convolutions and matmuls run in
bfloat16, BatchNorm normalises with float32 statistics, and the logits are cast back to
float32 before the loss.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax.training import train_state

from jaxood.data import augment
from jaxood.train import losses
from jaxood.train.config import TrainConfig
from jaxood.train.ish import ish_kernel_grad
from jaxood.train.optim import HEAD, make_optimizer

COMPUTE_DTYPES = {"f32": jnp.float32, "bf16": jnp.bfloat16}


class TrainState(train_state.TrainState):
    """``flax.training.train_state.TrainState`` plus the BatchNorm running statistics."""

    batch_stats: Any = None

    @property
    def variables(self) -> dict:
        """``{"params", "batch_stats"}``: what ``module.apply`` and ``models.save`` take."""
        return {"params": self.params, "batch_stats": self.batch_stats}

    def checkpoint(self) -> dict:
        """The pytree stored in checkpoints (a plain dict; the format of earlier runs)."""
        return {
            "params": self.params,
            "batch_stats": self.batch_stats,
            "opt_state": self.opt_state,
            "step": self.step,
        }

    def restored(self, tree: dict) -> TrainState:
        """This state with the arrays of a :meth:`checkpoint` tree."""
        return self.replace(**tree)


def create_train_state(cfg: TrainConfig, module, variables: dict, total_steps: int) -> TrainState:
    """A fresh state (step 0, zero momentum) for ``variables`` (``{"params", "batch_stats"}``)."""
    state = TrainState.create(
        apply_fn=module.apply,
        params=variables["params"],
        tx=make_optimizer(cfg, total_steps),
        batch_stats=variables.get("batch_stats", {}),
    )
    return state.replace(step=jnp.asarray(0, jnp.int32))


@dataclasses.dataclass(frozen=True)
class StepConfig:
    """The static settings of :func:`train_step` / :func:`eval_step` (hashable)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    seed: int = 0
    loss: str = "ce"
    logitnorm_tau: float = 0.04
    ish: bool = False
    ish_percentile: float = 0.85
    crop_padding: int = 4
    hflip: bool = True
    precision: str = "f32"

    @classmethod
    def from_config(cls, cfg: TrainConfig, mean, std) -> StepConfig:
        return cls(
            mean=tuple(map(float, mean)),
            std=tuple(map(float, std)),
            seed=int(cfg.seed),
            loss=cfg.loss,
            logitnorm_tau=float(cfg.logitnorm_tau),
            ish=bool(cfg.ish),
            ish_percentile=float(cfg.ish_percentile),
            crop_padding=int(cfg.crop_padding),
            hflip=bool(cfg.hflip),
            precision=cfg.precision,
        )


def compute_params(params: Any, batch_stats: Any, dtype) -> Any:
    """``params`` in the compute ``dtype``, except those of BatchNorm layers (the modules
    that also own ``batch_stats``), which normalise in float32."""
    if dtype == jnp.float32:
        return params
    norm_layers = {path[:-1] for path, _ in jax.tree_util.tree_leaves_with_path(batch_stats)}
    return jax.tree_util.tree_map_with_path(
        lambda path, p: p if path[:-1] in norm_layers else p.astype(dtype), params
    )


def train_step(state: TrainState, images: jax.Array, labels: jax.Array, *, hp: StepConfig):
    """One SGD step on a batch: ``images uint8 [B, H, W, C]``, ``labels int [B]``.

    Augments (random crop + flip) and normalises on the device, computes the loss and its
    gradient (ISH: the classifier-kernel gradient is replaced), applies the optimizer and
    the new BatchNorm statistics. Returns ``(new_state, {"loss", "correct", "count"})``, all
    device scalars (nothing is fetched to the host here).
    """
    key = jax.random.fold_in(jax.random.PRNGKey(hp.seed), state.step)
    aug_key, dropout_key = jax.random.split(key)
    x = augment.random_crop_flip(aug_key, images, hp.crop_padding, hp.hflip)
    dtype = COMPUTE_DTYPES[hp.precision]
    x = augment.normalize(x, hp.mean, hp.std).astype(dtype)

    def loss_fn(params):
        variables = {
            "params": compute_params(params, state.batch_stats, dtype),
            "batch_stats": state.batch_stats,
        }
        out, mutated = state.apply_fn(
            variables, x, train=True, mutable=["batch_stats"], rngs={"dropout": dropout_key}
        )
        logits = out.logits.astype(jnp.float32)
        kernel = params[HEAD]["kernel"] if hp.loss == "elogitnorm" else None
        loss = losses.compute_loss(hp.loss, logits, labels, kernel=kernel, tau=hp.logitnorm_tau)
        return loss, (logits, out.feature, mutated.get("batch_stats", {}))

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (loss, (logits, feature, batch_stats)), grads = grad_fn(state.params)
    if hp.ish:
        grads = ish_gradients(grads, feature, logits, labels, hp.ish_percentile)
    state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
    metrics = {
        "loss": loss,
        "correct": jnp.sum(jnp.argmax(logits, -1) == labels),
        "count": jnp.asarray(labels.shape[0]),
    }
    return state, metrics


def ish_gradients(grads, feature, logits, labels, percentile: float):
    """``grads`` with the classifier kernel's gradient replaced by ISH's ``h~^T dL/dz``."""
    delta = jax.grad(lambda z: losses.cross_entropy(z, labels))(logits)
    kernel_grad = ish_kernel_grad(feature.astype(jnp.float32), delta, percentile)
    return {
        **grads,
        HEAD: {**grads[HEAD], "kernel": kernel_grad.astype(grads[HEAD]["kernel"].dtype)},
    }


def eval_step(state: TrainState, images, labels, mask, *, hp: StepConfig) -> jax.Array:
    """Number of correctly classified real samples (``mask`` True) in the batch, float32."""
    x = augment.normalize(images, hp.mean, hp.std)
    out = state.apply_fn(state.variables, x, train=False)
    return jnp.sum((jnp.argmax(out.logits, -1) == labels) & mask)


def all_finite(tree: Any) -> jax.Array:
    """Device bool: every floating leaf of ``tree`` is finite."""
    leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)]
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))
