"""nnU-Net environment per job, device choice, output capture, the schedule trainer."""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

import pytest

from medsegflow.errors import ConfigError
from medsegflow.nnunet.env import nnunet_environment, pick_device, process_output_to_log
from medsegflow.nnunet.trainer import BASE_TRAINERS, schedule_trainer


def test_environment_is_set_for_the_block_and_restored(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("nnUNet_raw", "/somewhere/else")
    monkeypatch.delenv("nnUNet_results", raising=False)
    with nnunet_environment(
        tmp_path / "nn", method="m1", num_processes=3, augmentation_processes=0
    ) as roots:
        from nnunetv2.paths import nnUNet_preprocessed, nnUNet_raw, nnUNet_results

        assert str(nnUNet_raw) == str(tmp_path / "nn" / "nnUNet_raw") == str(roots.raw)
        assert str(nnUNet_preprocessed) == str(tmp_path / "nn" / "nnUNet_preprocessed")
        assert str(nnUNet_results) == str(tmp_path / "nn" / "nnUNet_results" / "m1")
        env = dict(os.environ)
        assert env["nnUNet_def_n_proc"] == "3" and env["nnUNet_n_proc_DA"] == "0"
        assert roots.results.is_dir() and roots.raw.is_absolute()
    env = dict(os.environ)
    assert env["nnUNet_raw"] == "/somewhere/else"
    assert "nnUNet_results" not in env


def test_device_is_cuda_then_mps_then_cpu() -> None:
    import torch

    expected = "cuda" if torch.cuda.is_available() else None
    if expected is None:
        mps = getattr(torch.backends, "mps", None)
        expected = "mps" if mps is not None and mps.is_available() else "cpu"
    assert pick_device().type == expected


def test_child_process_output_goes_to_the_log(tmp_path: Path) -> None:
    log = tmp_path / "job.log"
    with (
        open(log, "w", encoding="utf-8", buffering=1) as handle,
        contextlib.redirect_stdout(handle),
    ):
        with process_output_to_log():
            os.write(1, b"from fd 1\n")
            subprocess.run(["echo", "from a child"], check=True)
        print("from python")
    assert log.read_text(encoding="utf-8").splitlines() == [
        "from fd 1",
        "from a child",
        "from python",
    ]


def test_schedule_trainer_subclasses_the_base_with_the_schedule() -> None:
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.training.nnUNetTrainer.variants.data_augmentation.nnUNetTrainerNoDA import (
        nnUNetTrainerNoDA,
    )

    cls = schedule_trainer("nnUNetTrainer", epochs=3, iterations_per_epoch=7, val_iterations=2)
    assert cls.__name__ == "MedSegFlow_nnUNetTrainer" and issubclass(cls, nnUNetTrainer)
    assert cls.schedule == {
        "num_epochs": 3,
        "num_iterations_per_epoch": 7,
        "num_val_iterations_per_epoch": 2,
    }
    no_da = schedule_trainer(
        "nnUNetTrainerNoDA", epochs=1, iterations_per_epoch=1, val_iterations=1
    )
    assert issubclass(no_da, nnUNetTrainerNoDA)
    for name in BASE_TRAINERS:  # every supported base imports from its module
        assert schedule_trainer(name, epochs=1, iterations_per_epoch=1, val_iterations=1)
    with pytest.raises(ConfigError, match=r"^methods\.x\.trainer: unknown nnU-Net trainer 'Nope'"):
        schedule_trainer(
            "Nope", epochs=1, iterations_per_epoch=1, val_iterations=1, key="methods.x.trainer"
        )
    with pytest.raises(ConfigError, match=r"^epochs: 0 must be an integer >= 1"):
        schedule_trainer("nnUNetTrainer", epochs=0, iterations_per_epoch=1, val_iterations=1)
