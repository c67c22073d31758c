"""Experiment loggers: W&B set-up (``conf/logger/wandb.yaml``) and what a finished run reports to it."""
