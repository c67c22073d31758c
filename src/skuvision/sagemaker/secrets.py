"""The W&B API key, fetched inside the training container from AWS Secrets Manager.

The launcher passes only the secret's *name* (``SKUVISION_WANDB_SECRET``, from
``hydra.launcher.wandb_secret_name``); the key itself is read here with the job role's
credentials and placed in this process's environment, so it never appears in
hyperparameters, the job description, saved configs or logs. Nothing here prints or logs it.
"""

from __future__ import annotations

import json
import logging
import os

from skuvision.errors import UserError

# Deferred on purpose: boto3/botocore are slow to import and only S3 paths need them.

SECRET_ENV = "SKUVISION_WANDB_SECRET"
# keys accepted when the secret is a JSON object (the console's key/value form)
JSON_KEYS = ("WANDB_API_KEY", "wandb_api_key", "api_key", "key")


class SecretError(UserError):
    """The named secret cannot be read or holds no key; the message names the secret, never its value."""


def _key_from(secret_string: str, name: str) -> str:
    text = secret_string.strip()
    if text.startswith("{"):
        try:
            values = json.loads(text)
        except json.JSONDecodeError:
            raise SecretError(
                f'secret {name!r} looks like JSON but does not parse; store the bare key or {{"WANDB_API_KEY": "..."}}'
            ) from None
        for key in JSON_KEYS:
            if values.get(key):
                return str(values[key]).strip()
        raise SecretError(f"secret {name!r} has none of the keys {', '.join(JSON_KEYS)}")
    if not text:
        raise SecretError(f"secret {name!r} is empty")
    return text


def export_wandb_key(secret_name: str | None = None, region: str | None = None) -> bool:
    """Set ``WANDB_API_KEY`` in this process from the secret named by ``SKUVISION_WANDB_SECRET``.

    Returns False when no secret is configured (W&B then stays offline), True once the key is set.
    """
    name = secret_name or os.environ.get(SECRET_ENV)
    if not name:
        return False
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    previous = logging.root.manager.disable
    logging.disable(logging.DEBUG)  # botocore logs response bodies at DEBUG (e.g. under hydra.verbose=true)
    try:
        response = boto3.client("secretsmanager", region_name=region).get_secret_value(SecretId=name)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "Error")
        raise SecretError(
            f"cannot read secret {name!r} from AWS Secrets Manager ({code}); check the name and "
            "that the job's role may call secretsmanager:GetSecretValue on it"
        ) from None
    except BotoCoreError as exc:
        raise SecretError(f"cannot reach AWS Secrets Manager for secret {name!r}: {type(exc).__name__}") from None
    finally:
        logging.disable(previous)
    if "SecretString" not in response:
        raise SecretError(f"secret {name!r} is binary; store the W&B key as a string")
    os.environ["WANDB_API_KEY"] = _key_from(response["SecretString"], name)
    return True
