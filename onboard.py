"""Onboard new SKUs onto last month's model: `python onboard.py onboard.from=CKPT data.root=DELTA`, `-m` for sweeps.

Thin Hydra entry beside train.py (as lightning-hydra-template's eval.py); the task lives in
skuvision.onboarding.task.run so the SageMaker container entry runs exactly the same code.
"""

import hydra
from omegaconf import DictConfig

from skuvision.errors import exit_on_user_error


@hydra.main(version_base="1.3", config_path="conf", config_name="onboard")
@exit_on_user_error
def main(cfg: DictConfig) -> float | None:
    # Deferred on purpose, as in train.py: torch loads once Hydra has parsed the command line.
    from skuvision.entry.hydra_job import run_job
    from skuvision.onboarding.task import run

    return run_job(cfg, run)


if __name__ == "__main__":
    main()
