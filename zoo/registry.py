"""Building a named dataclass (model, task) from a config section."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import ml_collections

from zoo.errors import ConfigError


def construct(registry: Mapping[str, type], config: ml_collections.ConfigDict | Mapping[str, Any], kind: str,
              **extra: Any):
  """Instantiates registry[config['name']] with config's other keys as fields; `config` is a ConfigDict or a
  plain dict, and keys it leaves out take the dataclass defaults.

  Raises a ConfigError that names the known names or the valid options.
  """
  if isinstance(config, ml_collections.ConfigDict):
    kwargs = config.to_dict()
  elif isinstance(config, Mapping):
    kwargs = dict(config)
  else:
    raise ConfigError(f'The {kind} config must be a dict or ml_collections.ConfigDict with a name, '
                      f'not {type(config).__name__}.')
  name = kwargs.pop('name', None)
  if name not in registry:
    raise ConfigError(f'Unknown {kind} {name!r}; set config.{kind}.name to one of: {", ".join(sorted(registry))}.')
  cls = registry[name]
  fields = {f.name for f in dataclasses.fields(cls)} - {'parent', 'name', *extra}
  unknown = sorted(set(kwargs) - fields)
  if unknown:
    raise ConfigError(f'{kind} {name!r} has no option {", ".join(unknown)} '
                     f'(config.{kind}.{unknown[0]}); its options are: {", ".join(sorted(fields))}.')
  return cls(**kwargs, **extra)
