"""The job's one hyperparameter, ``overrides``: a sweep job's Hydra overrides as a JSON list.

The launcher encodes it, the SDK JSON-encodes hyperparameter values once more and the training
toolkit decodes them once, so the container entry (and a reader of DescribeTrainingJob) may see
either encoding: :func:`decode_overrides` accepts both and nothing else.
"""

from __future__ import annotations

import json

from skuvision.errors import UserError

EXAMPLE = '\'["experiment=resnet152_fmcg", "model.freeze_depth=3"]\''


def encode_overrides(overrides: list[str] | tuple[str, ...]) -> str:
    return json.dumps(list(overrides))


def decode_overrides(raw) -> list[str]:
    """A JSON list of strings; tolerates the value being JSON-encoded once more (SDK + toolkit encodings)."""
    value = raw
    for _ in range(2):
        if not isinstance(value, str):
            break
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise UserError(
                f"overrides={str(raw)[:200]!r}: not JSON; pass a JSON list of Hydra overrides, e.g. {EXAMPLE}"
            ) from None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UserError(f"overrides={str(raw)[:200]!r}: expected a JSON list of Hydra override strings, e.g. {EXAMPLE}")
    return value
