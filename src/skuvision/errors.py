"""Errors a user can fix, and the one-line exit every entry point wraps itself in (status 2, no traceback)."""

from __future__ import annotations

import functools
import sys


class UserError(Exception):
    """Bad input (config value, path, data); the message names it and says what to do."""


class ConfigError(UserError, ValueError):
    """A config value that cannot work."""


class DataError(UserError, ValueError):
    """Missing or malformed data: shard dir, manifest, label map, input listing."""


class StorageError(UserError):
    """No room to write an output (full disk, quota, file size limit): names the file and what to do."""


def user_error_types() -> tuple[type[BaseException], ...]:
    """UserError, and OmegaConf's missing ``???`` value once omegaconf is loaded: an error it raised can only
    exist then, and the command line's ``--help`` need not load it."""
    omegaconf_errors = sys.modules.get("omegaconf.errors")
    return (UserError, omegaconf_errors.MissingMandatoryValue) if omegaconf_errors else (UserError,)


def user_error_message(exc: BaseException) -> str | None:
    """The one line to show for a user error (config, data), or None when ``exc`` is a bug."""
    # hydra.utils.instantiate wraps what a _target_ raises (InstantiationException ... from exc)
    cause = exc.__cause__ if type(exc).__name__ == "InstantiationException" else exc
    if not isinstance(cause, user_error_types()):
        return None
    return str(cause).splitlines()[0] if str(cause) else type(cause).__name__


def exit_on_user_error(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            message = user_error_message(exc)
            if message is None:
                raise
            print(f"skuvision: error: {message}", file=sys.stderr, flush=True)
            sys.exit(2)

    return wrapper
