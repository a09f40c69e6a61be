"""Training CIFAR-style classifiers: ``TrainConfig`` + ``train`` (CLI: ``jaxood train``).

>>> from jaxood.train import TrainConfig, train
>>> result = train(TrainConfig(arch="wrn", arch_kwargs={"depth": 10, "widen_factor": 2},
...                            epochs=3, workdir="/tmp/run"), train_data=(x, y), val_data=(xv, yv))
>>> result.model_dir, result.best_val_acc, result.test_acc
"""

from jaxood.train.checkpointing import CheckpointError
from jaxood.train.config import TrainConfig
from jaxood.train.metrics import TrainingDiverged
from jaxood.train.trainer import TrainResult, summary, train

__all__ = ["CheckpointError", "TrainConfig", "TrainResult", "TrainingDiverged", "summary", "train"]
