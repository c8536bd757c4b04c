"""Published weights by name: `names()`, `load(name)` -> (model, variables, info), from the shipped registry,
a folder of the same layout or a URL (downloaded once into a cache, hash checked)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import shutil
import tempfile
import urllib.parse
import urllib.request
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from zoo import models
from zoo.pretrained.preprocessing import preprocess
from zoo.train.weights import (
  MANIFEST,
  PUBLISHED_DIR,
  WeightsError,
  check_version,
  entry,
  flatten,
  read_manifest,
  read_variables,
  verified_file,
)

# The license of each dataset's data (see the data's README); weights trained on it carry it.
DATA_LICENSES = {
    'mnist': 'CC BY-SA 3.0 (MNIST, LeCun & Cortes)',
    'fashion_mnist': 'MIT (Fashion-MNIST, Zalando SE; Xiao et al. 2017)',
    'binarized_mnist': 'CC BY-SA 3.0, derived from MNIST (Larochelle & Murray 2011)',
    'glue/sst2': 'research use (SST-2: Socher et al. 2013; GLUE: Wang et al. 2018)',
    'tiny_shakespeare': 'public domain text (tiny shakespeare, Karpathy\'s char-rnn collection)',
}


@dataclasses.dataclass(frozen=True)
class Info:
  """What is known about a published weight file.

  Attributes:
    name: the published name.
    dataset, split: the TFDS dataset and the split `metrics` were measured on (the file as shipped).
    metrics: {metric: value} on that split (accuracy in [0, 1]; losses in nats); `other_metrics` by split.
    params: parameter count; flops_per_example: forward-pass FLOPs of one example (zoo.models.flops).
    preprocessing: how raw input becomes model input ('kind': 'image' or 'text', image_shape, image_scale,
      binarize; token_level, max_length, language_model); `vocab` for text models.
    recipe: config file, overrides, seed, the exact train command, the commit, the results row.
    file_bytes, sha256: of the weight file. license: of the training data. storage: dtype stored and the
      measured metric difference against float32.
    config: the resolved run config that builds the model (config.model) and its data (config.data).
  """
  name: str
  dataset: str
  split: str
  metrics: dict[str, float]
  other_metrics: dict[str, dict[str, float]]
  evaluated_on: dict[str, Any]
  params: int
  flops_per_example: float
  preprocessing: dict[str, Any]
  recipe: dict[str, Any]
  file_bytes: int
  sha256: str
  license: str
  storage: dict[str, Any]
  config: ml_collections.ConfigDict
  vocab: list[str] | None = None

  def preprocess(self, raw: Any) -> np.ndarray:
    """Model input for a PNG path, an image array, a string or a list of strings (batch axis first)."""
    return preprocess(raw, self.preprocessing, self.vocab)


def cache_dir() -> pathlib.Path:
  """Where downloaded weights live: $ZOO_CACHE_DIR, else ~/.cache/zoo."""
  return pathlib.Path(os.environ.get('ZOO_CACHE_DIR', pathlib.Path.home() / '.cache' / 'zoo')) / 'weights'


def _is_url(source: str) -> bool:
  return urllib.parse.urlparse(str(source)).scheme in ('http', 'https', 'file')


def _fetch(url: str, target: pathlib.Path) -> None:
  """Downloads `url` into `target` (through a temporary file, so a broken download leaves nothing)."""
  target.parent.mkdir(parents=True, exist_ok=True)
  with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as out:
    try:
      with urllib.request.urlopen(url, timeout=60) as response:
        shutil.copyfileobj(response, out)
    except OSError as error:
      os.unlink(out.name)
      raise WeightsError(f'Could not download {url} ({error}); check the URL and the network.') from error
  os.replace(out.name, target)


def _download(base: str, name: str | None) -> tuple[pathlib.Path, dict[str, Any], str]:
  """(folder in the cache, manifest, name) for a URL of a weights folder; files already cached are reused."""
  base = base.rstrip('/') + '/'
  folder = cache_dir() / hashlib.sha256(base.encode()).hexdigest()[:16]
  _fetch(base + MANIFEST, folder / MANIFEST)
  manifest = read_manifest(folder)
  name = _only_name(manifest, base) if name is None else name
  for record in entry(manifest, name, base)['files'].values():
    target = folder / record['path']
    try:
      verified_file(folder, record)
    except WeightsError:
      _fetch(urllib.parse.urljoin(base, record['path']), target)
      verified_file(folder, record)
  return folder, manifest, name


def _only_name(manifest: dict[str, Any], where: str) -> str:
  names = sorted(manifest.get('weights', {}))
  if len(names) != 1:
    raise WeightsError(f'{where} publishes {len(names)} weights ({", ".join(names)}); '
                       'name one: load(name, source=...).')
  return names[0]


def _resolve(name_or_source: str, source: str | None) -> tuple[pathlib.Path, dict[str, Any], str]:
  """(folder, manifest, name) of what `load` was given."""
  if source is None and (_is_url(name_or_source) or pathlib.Path(name_or_source).is_dir()):
    name_or_source, source = None, name_or_source
  source = str(source) if source is not None else None
  if source is not None and _is_url(source):
    return _download(source, name_or_source)
  folder = pathlib.Path(source) if source is not None else PUBLISHED_DIR
  manifest = read_manifest(folder)
  name = _only_name(manifest, str(folder)) if name_or_source is None else name_or_source
  entry(manifest, name, str(folder))
  return folder, manifest, name


def names(source: str | None = None) -> list[str]:
  """The published names (of the shipped registry, or of a weights folder)."""
  return sorted(read_manifest(pathlib.Path(source) if source else PUBLISHED_DIR).get('weights', {}))


def model_input_spec(record: dict[str, Any]) -> jax.ShapeDtypeStruct:
  """The abstract model input of one example: f32[1, H, W, C] images or i32[1, T] tokens."""
  return jax.ShapeDtypeStruct((1, *record['preprocessing']['input_shape']),
                              jnp.dtype(record['preprocessing']['input_dtype']))


def expected_shapes(model: nn.Module, spec: jax.ShapeDtypeStruct) -> dict[str, tuple[int, ...]]:
  """{'params/.../kernel': shape} of the variables `model` creates for inputs like `spec`."""
  rng = jax.random.PRNGKey(0)
  abstract = jax.eval_shape(lambda x: nn.meta.unbox(model.init({'params': rng, 'dropout': rng, 'latent': rng}, x,
                                                                train=False)), spec)
  return {'/'.join(str(k.key) for k in path): tuple(leaf.shape)
          for path, leaf in jax.tree_util.tree_flatten_with_path(abstract)[0]}


def check_shapes(variables: dict[str, Any], expected: dict[str, tuple[int, ...]], where: str) -> None:
  """Refuses variables whose leaves or shapes differ from the model's, naming the leaves."""
  got = {key: tuple(value.shape) for key, value in flatten(variables).items()}
  problems = [f'{k} missing' for k in sorted(set(expected) - set(got))]
  problems += [f'{k} not in the model' for k in sorted(set(got) - set(expected))]
  problems += [f'{k} {got[k]} vs model {expected[k]}' for k in sorted(set(got) & set(expected))
               if got[k] != expected[k]]
  if problems:
    raise WeightsError(f'{where}: the weights do not fit the model its config builds ({"; ".join(problems)}). '
                       'Fix: re-publish the run with experiments/publish.py --overwrite, or restore the manifest.')


def info_of(name: str, record: dict[str, Any], vocab: list[str] | None) -> Info:
  """The Info record of a manifest entry."""
  weights = record['files']['weights']
  return Info(name=name, dataset=record['dataset'], split=record['split'], metrics=record['metrics'],
              other_metrics=record.get('other_metrics', {}), evaluated_on=record['evaluated_on'],
              params=record['params'], flops_per_example=record['flops_per_example'],
              preprocessing=record['preprocessing'], recipe=record['recipe'], file_bytes=weights['bytes'],
              sha256=weights['sha256'], license=record['license'], storage=record['storage'],
              config=ml_collections.ConfigDict(record['config']), vocab=vocab)


def load(name: str, source: str | None = None) -> tuple[nn.Module, dict[str, Any], Info]:
  """(model, variables, info) of published weights.

  `name` is a published name (`names()`), or a folder or URL of the same layout holding one entry; `source`
  (a folder or an http(s) URL) names where else to look. The weight file's sha256 is checked on every load.
  `variables` holds 'params' (and 'batch_stats' for BatchNorm models), float32 jax arrays, so
  `model.apply(variables, info.preprocess(raw), train=False)` runs the model as its run evaluated it.
  """
  folder, manifest, name = _resolve(name, source)
  record = entry(manifest, name, str(folder))
  check_version(record.get('format_version', manifest['format_version']), f'{folder / MANIFEST} entry {name!r}')
  variables = read_variables(folder, record['files']['weights'])
  vocab = None
  if 'vocab' in record['files']:
    vocab = json.loads(verified_file(folder, record['files']['vocab']).read_text(encoding='utf-8'))
  config = ml_collections.ConfigDict(record['config'])
  model = models.build(config.model)
  check_shapes(variables, expected_shapes(model, model_input_spec(record)), f'{folder / MANIFEST} entry {name!r}')
  return model, jax.tree.map(jnp.asarray, variables), info_of(name, record, vocab)
