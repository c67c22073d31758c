"""export_wandb_key() against moto's Secrets Manager on 127.0.0.1: the key lands in the environment only."""

from __future__ import annotations

import logging
import os

import pytest

from skuvision.sagemaker.secrets import SecretError, export_wandb_key

KEY = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def clean_env(monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("SKUVISION_WANDB_SECRET", raising=False)
    yield monkeypatch
    os.environ.pop("WANDB_API_KEY", None)


@pytest.mark.parametrize("stored", [KEY, f'{{"WANDB_API_KEY": "{KEY}"}}', f'{{"api_key": "{KEY}"}}'])
def test_key_from_the_named_secret_is_exported_and_never_shown(aws, clean_env, capsys, caplog, stored):
    aws.client("secretsmanager").create_secret(Name="skuvision/wandb", SecretString=stored)
    clean_env.setenv("SKUVISION_WANDB_SECRET", "skuvision/wandb")
    caplog.set_level(logging.DEBUG)
    assert export_wandb_key() is True
    assert os.environ["WANDB_API_KEY"] == KEY
    captured = capsys.readouterr()
    assert KEY not in captured.out + captured.err + caplog.text


def test_no_secret_configured_leaves_wandb_offline(aws, clean_env):
    assert export_wandb_key() is False
    assert "WANDB_API_KEY" not in os.environ


def test_missing_secret_is_one_clear_line(aws, clean_env):
    clean_env.setenv("SKUVISION_WANDB_SECRET", "no/such/secret")
    with pytest.raises(SecretError) as info:
        export_wandb_key()
    assert "'no/such/secret'" in str(info.value) and "secretsmanager:GetSecretValue" in str(info.value)
    assert "\n" not in str(info.value) and "WANDB_API_KEY" not in os.environ


def test_json_secret_without_a_key_names_the_secret_not_its_content(aws, clean_env):
    aws.client("secretsmanager").create_secret(Name="wandb-json", SecretString='{"user": "s3cr3t-value"}')
    with pytest.raises(SecretError, match="'wandb-json' has none of the keys") as info:
        export_wandb_key("wandb-json")
    assert "s3cr3t" not in str(info.value)
