"""User-facing errors of the offline side; the CLI prints their message without a traceback."""


class LLMRecError(Exception):
    """Base class: something the user can fix (a path, a flag, a file's content)."""


class DataError(LLMRecError):
    """A data file is missing, malformed, or yields nothing usable."""


class ConfigError(LLMRecError):
    """A flag or config value is invalid or inconsistent."""


class CheckpointError(LLMRecError):
    """A checkpoint or bundle is missing, corrupted, or does not match what is asked of it."""
