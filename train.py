"""Train a SKU classifier: `python train.py [experiment=...] [overrides]`, `-m` for sweeps.

Thin Hydra entry; the task lives in skuvision.train.run so the SageMaker
container entry and the per-job DDP ranks of a local sweep run exactly the same code.
"""

import hydra
from omegaconf import DictConfig

import skuvision.distributed  # noqa: F401  registers the `smddp` strategy
from skuvision.errors import exit_on_user_error


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
@exit_on_user_error
def main(cfg: DictConfig) -> float | None:
    from skuvision.distributed import sweep
    from skuvision.report.sweep_status import run_sweep_job
    from skuvision.train import run

    if sweep.needs_own_launch(cfg):  # Hydra multirun + local DDP: this job starts its own torchrun ranks
        return run_sweep_job(lambda: sweep.launch_sweep_job(cfg))
    return run_sweep_job(lambda: run(cfg))  # under -m a failed job is reported and the sweep goes on


if __name__ == "__main__":
    main()
