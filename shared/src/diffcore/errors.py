"""User-facing errors. The CLI turns each into one line on stderr and exit code 1, never a traceback."""


class DiffnetsError(Exception):
    """Base class: the message alone must tell the user what is wrong and what to do."""


class ConfigError(DiffnetsError, ValueError):
    """A config value, key, preset or file that cannot be used."""


class CheckpointError(DiffnetsError, RuntimeError):
    """A checkpoint folder that cannot be loaded."""


class DataError(DiffnetsError, FileNotFoundError):
    """A dataset that is missing or malformed; the message names the expected files and ``--data-root``."""
