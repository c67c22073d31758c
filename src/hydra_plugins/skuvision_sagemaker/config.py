"""Registers ``hydra/launcher: sagemaker`` in Hydra's ConfigStore (imported by Hydra's plugin discovery).

The schema lives in ``skuvision.sagemaker.settings`` (pure Python) so discovery stays fast.
"""

from hydra.core.config_store import ConfigStore

from skuvision.sagemaker.settings import SageMakerLauncherConf

ConfigStore.instance().store(group="hydra/launcher", name="sagemaker", node=SageMakerLauncherConf, provider="skuvision")
