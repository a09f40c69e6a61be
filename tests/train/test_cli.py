"""``jaxood train`` argument handling and error reporting (no real training here)."""

from __future__ import annotations

import json

from jaxood import cli
from jaxood.cli.train import config_from_args
from jaxood.train.config import TrainConfig


def _args(argv):
    return cli.build_parser().parse_args(["train", *argv])


def test_defaults_are_the_openood_recipe():
    cfg = config_from_args(_args(["--dataset", "cifar10"]))
    assert (cfg.epochs, cfg.batch_size, cfg.lr, cfg.min_lr) == (100, 128, 0.1, 1e-6)
    assert (cfg.momentum, cfg.nesterov, cfg.weight_decay) == (0.9, True, 5e-4)
    assert (cfg.crop_padding, cfg.hflip, cfg.loss, cfg.val_size) == (4, True, "ce", 1000)


def test_flags_override_a_config_file(tmp_path):
    TrainConfig(arch="wrn16_4", epochs=7, lr=0.2).save(tmp_path / "c.json")
    argv = [
        "--config",
        str(tmp_path / "c.json"),
        "--lr",
        "0.05",
        "--arch-kwargs",
        '{"dropout_rate": 0.3}',
    ]
    cfg = config_from_args(
        _args([*argv, "--mean", "0.1,0.2,0.3", "--no-hflip", "--ish", "--precision", "bf16"])
    )
    assert (cfg.arch, cfg.epochs, cfg.lr, cfg.hflip, cfg.ish) == ("wrn16_4", 7, 0.05, False, True)
    assert cfg.precision == "bf16" and cfg.fc_weight_decay is None  # resolved to 5e-5 in train
    assert cfg.classifier_weight_decay() == 5e-5
    assert cfg.arch_kwargs == {"dropout_rate": 0.3} and cfg.mean == (0.1, 0.2, 0.3)


def test_resume_reads_the_workdir_config(tmp_path):
    TrainConfig(arch="densenet_bc_100", dataset="cifar100", workdir=str(tmp_path)).save(
        tmp_path / "config.json"
    )
    cfg = config_from_args(_args(["--workdir", str(tmp_path), "--resume"]))
    assert (cfg.arch, cfg.dataset) == ("densenet_bc_100", "cifar100")


def test_user_errors_are_one_line_exit_code_2(tmp_path, capsys):
    assert cli.main(["train", "--dataset", "svhn", "--workdir", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err
    assert "unknown dataset 'svhn'" in err and "cifar100" in err and "Traceback" not in err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"epochz": 3}))
    assert cli.main(["train", "--config", str(bad)]) == 2
    assert "epochz" in capsys.readouterr().err
    assert cli.main(["train", "--workdir", str(tmp_path / "w2")]) == 2
    assert "--dataset is required" in capsys.readouterr().err
