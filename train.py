"""Train a SKU classifier: `python train.py [experiment=...] [overrides]`, `-m` for sweeps.

Thin Hydra entry; the task lives in skuvision.train.run so the SageMaker container entry and the
per-job DDP ranks of a local sweep run exactly the same code.
"""

import hydra
from omegaconf import DictConfig

from skuvision.errors import exit_on_user_error


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
@exit_on_user_error
def main(cfg: DictConfig) -> float | None:
    # Deferred on purpose: torch and Lightning load once Hydra has parsed the command line, so
    # `python train.py --help` and `--cfg job` answer in a second instead of ~10.
    from skuvision.entry.hydra_job import run_job
    from skuvision.train import run

    return run_job(cfg, run)


if __name__ == "__main__":
    main()
