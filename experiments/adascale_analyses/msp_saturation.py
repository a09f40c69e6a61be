"""How often a model's maximum softmax probability is exactly 1.0 in float32 (MSP ties).

    python experiments/adascale_analyses/msp_saturation.py \
        --model experiments/runs/train_methods/wrn16_4_logitnorm_e3/best

The training-method table shows MSP with FPR@95 = 100.00 for the LogitNorm models: this
prints and records, per split of fashion-openset (first 3,000 images of each OOD set), the
fraction of images whose MSP is exactly 1.0, i.e. tied at the top. Writes
``experiments/results/adascale_analyses/msp_saturation.json`` (merged per model).
"""

from __future__ import annotations

import argparse
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from jaxood import models
from jaxood.data.openset import fashion_openset

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "experiments", "results", "adascale_analyses", "msp_saturation.json")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", required=True)
    p.add_argument("--data-root", default=os.path.join(ROOT, "..", "shared", "data"))
    args = p.parse_args()
    lm = models.load(args.model)
    pre = lm.preprocess
    mean, std = jnp.asarray(pre.mean), jnp.asarray(pre.std)
    msp = jax.jit(lambda x: jax.nn.softmax(
        lm.module.apply(lm.variables, (x / 255.0 - mean) / std, train=False).logits).max(-1))
    data = fashion_openset(args.data_root)
    sets = {"id_test": data["test"][0]}
    for group in ("near", "far"):
        sets.update({f"{group}/{k}": v[0] if isinstance(v, tuple) else v
                     for k, v in data[group].items()})
    rec = {}
    for name, x in sets.items():
        x = np.asarray(x[:3000], np.float32).reshape(-1, *lm.manifest["input_shape"])
        s = np.concatenate([np.asarray(msp(x[i:i + 500])) for i in range(0, len(x), 500)])
        rec[name] = {"n": len(s), "fraction_msp_eq_1": float(np.mean(s == 1.0))}
        print(name, rec[name], flush=True)
    old = json.load(open(OUT)) if os.path.isfile(OUT) else {}
    old[os.path.relpath(os.path.abspath(args.model), ROOT)] = rec
    with open(OUT + ".tmp", "w") as f:
        json.dump(old, f, indent=1)
    os.replace(OUT + ".tmp", OUT)


if __name__ == "__main__":
    main()
