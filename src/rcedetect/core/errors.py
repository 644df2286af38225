"""The exceptions of rcedetect: one family, each naming what is wrong and how to fix it.

The CLI turns any :class:`RceError` into one line on stderr and exit status 2.
"""


class RceError(Exception):
    """Base class of every error rcedetect raises on purpose."""


class InputError(RceError, ValueError):
    """An input tensor or array has the wrong shape, dtype, range, or contains NaN/inf."""


class ConfigError(RceError, ValueError):
    """An unknown preset, name or option, or a bad ``key=value`` setting."""


class DataError(RceError):
    """A dataset is missing, cannot be downloaded, or is not in the expected layout."""


class CheckpointError(RceError):
    """A checkpoint or saved artifact is missing, truncated, corrupted, foreign or mismatched."""


class NotFittedError(RceError, RuntimeError):
    """A detector was used before ``fit`` / ``calibrate``."""


class TrainingError(RceError, RuntimeError):
    """Training cannot go on: the loss or the weights became NaN or infinite (nothing broken is saved)."""
