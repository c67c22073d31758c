"""Hydra launcher plugin ``sagemaker``: each sweep job becomes an Amazon SageMaker training job.

``python train.py -m hydra/launcher=sagemaker experiment=resnet152_fmcg model.freeze_depth=2,3,4,5``
sends the same sweep that runs locally without ``hydra/launcher=sagemaker``. Settings:
``skuvision.sagemaker.settings.SageMakerLauncherConf``; SDK calls: ``skuvision.sagemaker.job``;
set-up and usage: README, "Run on SageMaker". ``hydra_plugins`` is a namespace package (no ``__init__.py``)
so Hydra discovers this plugin next to others.
"""
