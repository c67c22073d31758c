"""Errors a user can fix: entry points print their message as one line and exit 2, no traceback."""


class UserError(Exception):
    """Bad input (config value, path, data); the message names it and says what to do."""


class ConfigError(UserError, ValueError):
    """A config value that cannot work."""


class DataError(UserError, ValueError):
    """Missing or malformed data: shard dir, manifest, label map, input listing."""
