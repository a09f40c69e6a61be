"""Several full training steps (forward, loss, backward, coupled L2, SGD-Nesterov, per-step
cosine lr, BatchNorm in train mode) against OpenOOD's PyTorch loop on the same WRN and batches.

Starting from identical weights (copied torch -> flax), the parameters, the losses and the
BatchNorm running means must track PyTorch step after step, for CE and for LogitNorm (whose
1/(tau ||z||) gradient scale makes it the most sensitive of the losses). Augmentation is off
(crop_padding 0, no flip) so both sides see the same pixels.
"""

from __future__ import annotations

import importlib.util
import math
import pathlib

import jax
import numpy as np
import pytest

from jaxood import models
from jaxood.train import TrainConfig
from jaxood.train.steps import StepConfig, create_train_state, train_step

torch = pytest.importorskip("torch")
F = torch.nn.functional

_spec = importlib.util.spec_from_file_location(
    "cifar_refs", pathlib.Path(__file__).parents[1] / "models" / "test_cifar_models.py")
refs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(refs)

STEPS, BATCH, LR, MIN_LR, WD, MEAN, STD = 4, 16, 0.1, 1e-6, 5e-4, 0.3, 0.35


def torch_wrn(seed: int):
    torch.manual_seed(seed)
    return refs.openood_wrn_init(refs.TWRN(10, 1, 6, in_ch=1)).train()


def torch_run(net, batches, loss: str, tau: float = 0.04):
    opt = torch.optim.SGD(net.parameters(), lr=LR, momentum=0.9, weight_decay=WD, nesterov=True)
    cos = lambda s: MIN_LR / LR + (1 - MIN_LR / LR) * 0.5 * (1 + math.cos(s / STEPS * math.pi))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cos)
    out = []
    for x, y in batches:
        xt = torch.from_numpy(((x / 255.0 - MEAN) / STD).astype(np.float32)).permute(0, 3, 1, 2)
        z = net(xt)[0]
        if loss == "logitnorm":
            z = z / (torch.linalg.norm(z, dim=-1, keepdim=True) + 1e-7) / tau
        value = F.cross_entropy(z, torch.from_numpy(y.astype(np.int64)))
        opt.zero_grad()
        value.backward()
        opt.step()
        sched.step()
        out.append(value.item())
    return out


@pytest.mark.parametrize("loss", ["ce", "logitnorm"])
def test_train_steps_track_pytorch(loss):
    rng = np.random.default_rng(0)
    batches = [(rng.integers(0, 256, (BATCH, 16, 16, 1), dtype=np.uint8),
                rng.integers(0, 6, BATCH)) for _ in range(STEPS)]
    net = torch_wrn(0)
    variables = jax.tree.map(np.asarray, refs.wrn_to_flax(net))
    module = models.create("wrn", 6, depth=10, widen_factor=1)
    cfg = TrainConfig(arch="wrn", num_classes=6, lr=LR, min_lr=MIN_LR, weight_decay=WD,
                      loss=loss, input_shape=(16, 16, 1), crop_padding=0, hflip=False)
    state = create_train_state(cfg, module, variables, STEPS)
    hp = StepConfig(mean=(MEAN,), std=(STD,), loss=loss, crop_padding=0, hflip=False)
    step = jax.jit(lambda s, x, y: train_step(s, x, y, hp=hp))
    ours = []
    for x, y in batches:
        state, metrics = step(state, x, y)
        ours.append(float(metrics["loss"]))

    theirs = torch_run(net, batches, loss)
    np.testing.assert_allclose(ours, theirs, rtol=2e-4)
    got = refs.wrn_to_flax(net)
    for path, want in jax.tree_util.tree_leaves_with_path(got["params"]):
        np.testing.assert_allclose(_at(state.params, path), want, rtol=2e-3, atol=2e-5, err_msg=str(path))
    for path, want in jax.tree_util.tree_leaves_with_path(got["batch_stats"]):
        if path[-1].key == "mean":  # running var: biased (flax) vs unbiased (torch), documented
            np.testing.assert_allclose(_at(state.batch_stats, path), want, rtol=1e-3,
                                       atol=1e-5, err_msg=str(path))
    assert ours[0] != ours[-1]  # the steps did move the model


def _at(tree, path):
    for k in path:
        tree = tree[k.key]
    return np.asarray(tree)
