"""Published weight files: safetensors files plus one manifest.json in a folder, read with integrity checks.

Layout of a weights folder (the registry shipped in zoo/pretrained/weights, or any folder or URL like it):

  manifest.json          {'format_version': 1, 'weights': {name: entry}}
  <name>.safetensors     the variables, one tensor per leaf, keys 'params/Conv_0/kernel', 'batch_stats/...'
  <name>.vocab.json      text models: the vocabulary, token of id i at index i

An entry names its files with their sha256 and size (entry['files'][role] = {'path', 'sha256', 'bytes'}),
the resolved config that builds the model, and what was measured on the file. This module reads and writes
the format and needs no model code; zoo.pretrained builds models from it, and config.init_from starts
training from it.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
from typing import Any

import numpy as np
import safetensors.numpy

from zoo.errors import UserError

FORMAT_VERSION = 1
MANIFEST = 'manifest.json'
# The registry shipped in the wheel (package data of zoo.pretrained).
PUBLISHED_DIR = pathlib.Path(__file__).resolve().parents[1] / 'pretrained' / 'weights'


class WeightsError(UserError, ValueError):
  """A weights folder, manifest entry or weight file that zoo cannot use as it is."""


def sha256(path: pathlib.Path) -> str:
  """Hex sha256 of a file's bytes."""
  digest = hashlib.sha256()
  with open(path, 'rb') as file:
    for block in iter(lambda: file.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()


def read_manifest(folder: pathlib.Path) -> dict[str, Any]:
  """The manifest of a weights folder; refuses one written by a newer zoo."""
  path = pathlib.Path(folder) / MANIFEST
  if not path.is_file():
    raise WeightsError(f'{folder} holds no {MANIFEST}; pass a weights folder written by experiments/publish.py.')
  try:
    manifest = json.loads(path.read_text(encoding='utf-8'))
  except json.JSONDecodeError as error:
    raise WeightsError(f'{path} is not valid JSON ({error}); restore it from the repository or re-publish.') from error
  check_version(manifest.get('format_version'), str(path))
  return manifest


def check_version(version: Any, where: str) -> None:
  """Refuses a format version this zoo cannot read."""
  if not isinstance(version, int) or version > FORMAT_VERSION:
    raise WeightsError(f'{where} has format version {version!r}; this zoo reads up to version {FORMAT_VERSION}. '
                       'Fix: upgrade zoo (pip install -U zoo) to load it.')


def entry(manifest: dict[str, Any], name: str, where: str) -> dict[str, Any]:
  """The manifest's entry `name`; an unknown name lists the published ones."""
  weights = manifest.get('weights', {})
  if name not in weights:
    raise WeightsError(f'No published weights named {name!r} in {where}; published: {", ".join(sorted(weights))}.')
  return weights[name]


def verified_file(folder: pathlib.Path, record: dict[str, Any]) -> pathlib.Path:
  """folder/record['path'] after checking its size and sha256 against the record."""
  path = pathlib.Path(folder) / record['path']
  if not path.is_file():
    raise WeightsError(f'{path} is missing; restore it (reinstall zoo, or re-publish with experiments/publish.py).')
  size = path.stat().st_size
  if size != record['bytes'] or sha256(path) != record['sha256']:
    raise WeightsError(f'{path} is damaged: {size} bytes and a sha256 other than the manifest\'s '
                       f'({record["bytes"]} bytes, sha256 {record["sha256"][:12]}...); the file is truncated or '
                       'altered. Fix: restore it (reinstall zoo, delete it from the download cache, or re-publish).')
  return path


def flatten(variables: dict[str, Any]) -> dict[str, np.ndarray]:
  """{'params': {'Dense_0': {'kernel': a}}} -> {'params/Dense_0/kernel': a} (numpy arrays)."""
  flat = {}

  def visit(prefix: str, node: Any) -> None:
    if isinstance(node, dict) or hasattr(node, 'items'):
      for key, value in node.items():
        visit(f'{prefix}/{key}' if prefix else str(key), value)
    else:
      flat[prefix] = np.asarray(node)

  visit('', variables)
  return flat


def unflatten(flat: dict[str, np.ndarray]) -> dict[str, Any]:
  """The inverse of `flatten`."""
  nested: dict[str, Any] = {}
  for key in sorted(flat):
    *parents, leaf = key.split('/')
    node = nested
    for part in parents:
      node = node.setdefault(part, {})
    node[leaf] = flat[key]
  return nested


def read_variables(folder: pathlib.Path, record: dict[str, Any]) -> dict[str, Any]:
  """The verified weight file's variables, float leaves as float32 numpy arrays."""
  path = verified_file(folder, record)
  data = path.read_bytes()
  check_version(int(json.loads(data[8:8 + int.from_bytes(data[:8], 'little')]).get('__metadata__', {})
                    .get('format_version', FORMAT_VERSION)), str(path))
  flat = safetensors.numpy.load(data)
  return unflatten({k: v.astype(np.float32) if np.issubdtype(v.dtype, np.floating) else v for k, v in flat.items()})


def write_variables(path: pathlib.Path, variables: dict[str, Any], dtype: str = 'float32') -> dict[str, Any]:
  """Writes `variables` as safetensors with float leaves stored as `dtype`; returns its file record."""
  flat = {k: v.astype(dtype) if np.issubdtype(v.dtype, np.floating) else v for k, v in flatten(variables).items()}
  path.write_bytes(safetensors.numpy.save(flat, metadata={'format_version': str(FORMAT_VERSION)}))
  return file_record(path)


def file_record(path: pathlib.Path) -> dict[str, Any]:
  """{'path': name, 'sha256': hex, 'bytes': size} of a file in a weights folder."""
  return {'path': path.name, 'sha256': sha256(path), 'bytes': path.stat().st_size}


def published_variables(name_or_folder: str) -> tuple[dict[str, Any], dict[str, Any]]:
  """(entry, variables) of a published name, or of the only entry of a weights folder's manifest."""
  folder = pathlib.Path(name_or_folder)
  if (folder / MANIFEST).is_file():
    manifest = read_manifest(folder)
    names = sorted(manifest.get('weights', {}))
    if len(names) != 1:
      raise WeightsError(f'{folder} publishes {len(names)} weights ({", ".join(names)}); name one of them.')
    name = names[0]
  else:
    folder, name = PUBLISHED_DIR, name_or_folder
    manifest = read_manifest(folder)
  record = entry(manifest, name, str(folder))
  return record, read_variables(folder, record['files']['weights'])
