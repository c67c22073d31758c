"""Sweep reports: ``skuvision compare`` (table + plot over run dirs or a W&B group)."""
