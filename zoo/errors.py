"""Errors caused by input a user can fix; each message names the fix.

Launchers print these as one line instead of a traceback.
"""


class UserError(Exception):
  """Bad input (config, flags, data, workdir), as opposed to a bug in zoo."""


class ConfigError(UserError, ValueError):
  """A config value that zoo cannot use."""


class DataUnavailableError(UserError, RuntimeError):
  """A dataset can be neither found locally nor downloaded, or its files are corrupt."""


class CheckpointMismatchError(UserError, ValueError):
  """The workdir holds a checkpoint made for a different model or task."""


class NonFiniteLossError(UserError, FloatingPointError):
  """Training produced a non-finite loss or gradient."""
