"""`--config=NAME` for the configs shipped with zoo, beside `--config=path/to/config.py`."""

from __future__ import annotations

import importlib.resources
import pathlib


def shipped_configs() -> list[str]:
  """Names of the configs in the installed `zoo.configs` package (experiments/configs in a checkout)."""
  folder = importlib.resources.files('zoo.configs')
  return sorted(p.name[:-3] for p in folder.iterdir() if p.name.endswith('.py') and not p.name.startswith('_'))


def resolve_config_flag(argv: list[str], flag: str = 'config') -> list[str]:
  """argv with `--FLAG=NAME[:ARG]` replaced by the shipped config's path when NAME is not an existing file.

  Paths (and anything that exists on disk) pass through unchanged, so config_flags reports its own errors.
  """
  prefix = f'--{flag}='
  resolved = []
  for arg in argv:
    if arg.startswith(prefix):
      value = arg[len(prefix):]
      name, colon, config_arg = value.partition(':')
      if not pathlib.Path(name).exists() and '/' not in name and not name.endswith('.py') and name:
        path = importlib.resources.files('zoo.configs') / f'{name}.py'
        if path.is_file():
          arg = f'{prefix}{path}{colon}{config_arg}'
    resolved.append(arg)
  return resolved
