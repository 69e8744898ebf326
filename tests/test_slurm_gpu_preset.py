"""hydra/launcher=slurm_gpu composes into the sbatch header a GPU job needs (one GPU per task, CPUs per GPU,
time limit), through the same parameter path hydra-submitit-launcher 1.2.0 uses (no cluster needed)."""

from __future__ import annotations

from unittest import mock

from omegaconf import OmegaConf

from tests.conftest import compose_config


def test_slurm_gpu_preset_renders_gpus_per_task_cpus_per_gpu_and_time(tmp_path):
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from submitit.slurm import slurm

    cfg = compose_config(
        ["hydra/launcher=slurm_gpu", "hydra.launcher.partition=gpu"], return_hydra_config=True
    )
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=False)
    launcher.pop("_target_")
    assert launcher["gpus_per_task"] == 1 and launcher["cpus_per_gpu"] == 8 and launcher["timeout_min"] == 360
    assert launcher["gpus_per_node"] is None and launcher["cpus_per_task"] is None
    # the plugin's mapping (SlurmLauncher.launch): generic keys as they are, the rest prefixed slurm_
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    params = {
        (k if k in base else f"slurm_{k}"): v
        for k, v in launcher.items()
        if k not in ("submitit_folder", "max_num_timeout")
    }
    params["name"] = "pifs-jacobian"
    with mock.patch("shutil.which", return_value="/usr/bin/srun"):
        ex = submitit.AutoExecutor(folder=str(tmp_path), cluster="slurm")
    ex.update_parameters(**params)
    header = slurm._make_sbatch_string(
        command="python -m stages.jacobian", folder=str(tmp_path), **ex._executor.parameters
    )
    for line in ("--gpus-per-task=1", "--cpus-per-gpu=8", "--time=360", "--mem=32GB", "--partition=gpu"):
        assert f"#SBATCH {line}\n" in header, header
    assert "--gpus-per-node" not in header and "--cpus-per-task" not in header
