"""The default run config that every experiment config starts from."""

from __future__ import annotations

import ast
from typing import Mapping

import ml_collections

from zoo.errors import ConfigError
from zoo.parallel.mesh import DEFAULT_RULES

# XLA CPU option value that hands dot, elementwise and reduce fusions to YNNPACK (conv nets use it).
YNN_FUSIONS = 'LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_ELTWISE,LIBRARY_FUSION_TYPE_REDUCE'

# Data-section defaults per dataset, over the image defaults below.
DATA_PRESETS = {
    'glue/sst2': dict(eval_split='validation', test_split='validation', batch_size=64, eval_batch_size=218,
                      token_level='word', vocab_size=20000, max_length=60),
    'tiny_shakespeare': dict(eval_split='validation', test_split='test', batch_size=64, eval_batch_size=64,
                             token_level='char', vocab_size=128, max_length=128),
    'binarized_mnist': dict(eval_split='validation', test_split='test', eval_batch_size=500, image_scale=1.0),
    # JPEGs decoded, cropped (Inception crops for train; resize to 256 + centre 224 for eval) and flipped
    # in `num_workers` grain processes; see docs/imagenet.md.
    'imagenet2012': dict(eval_split='validation', test_split='validation', batch_size=1024, eval_batch_size=1024,
                         cache_in_memory=False, image_size=224, num_workers=8, jpeg_draft=True,
                         augment=dict(translate=0, flip=True, word_dropout=0.0, random_resized_crop=True)),
}


def default_config(dataset: str = 'mnist') -> ml_collections.ConfigDict:
  """All sections with their defaults for `dataset`; experiment configs override what they need.

  data: dataset (TFDS name), splits, batching, caching, train-time augmentation, TFDS dir (None: TFDS's default).
    name='tsv' reads your own text from tsv_dir (<split>.tsv, sentence<TAB>label; see zoo.data.pipeline).
    bucket_by_length: text batches of similar lengths, cut to their longest example (zoo.data.bucketing).
  model / task: `name` picks the module / task; other keys are its options.
  optimizer: see zoo.train.optim.build.
  mesh: axes {'data', 'fsdp', 'tensor': size, one may be -1}, logical-axis rules (logical name -> mesh
    axis; see zoo.parallel.mesh) and strategy ('jit' over sharded arrays, or 'pmap' over replicas).
  microbatches: gradient accumulation; each batch is split into this many micro-batches, one optimizer step.
  quantization.aware_training: train (and evaluate) with int8 fake-quantized Dense/Conv layers (QAT).
  compute_dtype: 'float32', or 'bfloat16'/'float16' for mixed precision (params and optimizer stay f32).
  init_from: a published weights name (zoo.pretrained.list()), weights folder or run folder whose params and
    BatchNorm statistics a new run starts from (optimizer fresh; see zoo.train.init_from); None: initialise.
  eval_every_epochs, checkpoint.every_epochs: how often to evaluate and save, in epochs (rounded to steps);
    eval_every, checkpoint.every: the same in steps, which win where set.
  checkpoint: interval, how many to keep (last N, best K by a metric).
  nonfinite: 'stop' or 'skip' on a non-finite loss or gradient.
  cpu_compiler_options: XLA options for the steps on the CPU backend (see zoo.train.step.compiler_options).
  cpu_reuse_host_memory: on the CPU backend, keep freed step buffers in the heap (zoo.train.host_memory).
  cpu_single_malloc_arena: with it, all threads allocate from one heap, for steps whose buffers exceed 64 MiB
    (applied by the launchers before JAX starts; see zoo.train.host_memory).
  """
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.data = ml_collections.ConfigDict(dict(
      name=dataset, train_split='train', eval_split='test', test_split='test',
      batch_size=128, eval_batch_size=1000, cache_in_memory=True, num_threads=0, image_scale=255.0,
      augment=dict(translate=0, flip=False, word_dropout=0.0),
      tfds_dir=ml_collections.config_dict.placeholder(str), tsv_dir=ml_collections.config_dict.placeholder(str),
      bucket_by_length=False) | DATA_PRESETS.get(dataset, {}))
  config.model = ml_collections.ConfigDict(dict(name='cnn'))
  config.task = ml_collections.ConfigDict(dict(name='classification'))
  config.optimizer = ml_collections.ConfigDict(dict(
      name='adam', learning_rate=1e-3, schedule='constant', warmup_steps=0, end_learning_rate=0.0, staircase=False,
      momentum=0.9, b1=0.9, b2=0.999, eps=1e-8, decay=0.9, weight_decay=0.0, l2=0.0, l1=0.0, grad_clip_norm=0.0,
      decay_mask='kernels', average_decay=0.0,
      pruning=dict(sparsity=0.0, scope='global', begin_fraction=0.0, end_fraction=0.75, every=50)))
  config.mesh = ml_collections.ConfigDict(dict(axes={'data': -1, 'fsdp': 1, 'tensor': 1}, rules=DEFAULT_RULES,
                                               strategy='jit'))
  config.quantization = ml_collections.ConfigDict(dict(aware_training=False))
  config.microbatches = 1
  config.compute_dtype = 'float32'
  config.num_epochs = 10
  config.num_train_steps = -1
  config.log_every = 100
  config.eval_every = ml_collections.config_dict.placeholder(int)
  config.eval_every_epochs = 1.0
  config.checkpoint = ml_collections.ConfigDict(dict(
      every=ml_collections.config_dict.placeholder(int), every_epochs=1.0, keep=3, keep_best=0,
      best_metric='eval_accuracy', best_mode='max', async_save=True))
  config.init_from = ml_collections.config_dict.placeholder(str)
  config.nonfinite = 'stop'
  config.cpu_compiler_options = {}
  config.cpu_reuse_host_memory = True
  config.cpu_single_malloc_arena = False
  return config


def _merged(defaults: dict, given: Mapping) -> dict:
  """`defaults` with `given`'s keys over them, nested sections merged key by key."""
  merged = dict(defaults)
  for key, value in given.items():
    if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
      value = _merged(merged[key], value)
    merged[key] = value
  return merged


def complete(section: str, given: Mapping | None) -> ml_collections.ConfigDict:
  """A config section from a plain or partial dict (or ConfigDict): default_config()'s `section` (for 'data',
  that of the dataset `given` names) with `given`'s keys over it, so research code can pass just what it
  changes (`{'name': 'adamw', ...}`)."""
  if given is not None and not isinstance(given, (Mapping, ml_collections.ConfigDict)):
    raise ConfigError(f'The {section} config must be a dict or ml_collections.ConfigDict, not {type(given).__name__}.')
  given = given.to_dict() if isinstance(given, ml_collections.ConfigDict) else dict(given or {})
  defaults = default_config(given.get('name', 'mnist')) if section == 'data' else default_config()
  return ml_collections.ConfigDict(_merged(defaults[section].to_dict(), given))


def set_dotted(config: ml_collections.ConfigDict, dotted: str, value) -> None:
  """config['a']['b']['c'] = value for dotted = 'a.b.c' (sections must exist)."""
  *parents, key = dotted.split('.')
  for parent in parents:
    config = config[parent]
  config[key] = value


def apply_overrides(config: ml_collections.ConfigDict, overrides: list[str]) -> None:
  """Sets each 'a.b.c=value' in config; value is a Python literal where it parses (2, 'x', {'data': 2}), else text."""
  for override in overrides:
    dotted, _, raw = override.partition('=')
    try:
      value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
      value = raw
    try:
      set_dotted(config, dotted, value)
    except (KeyError, AttributeError) as error:
      raise ConfigError(f'--set={override}: {dotted} is not a key of this config ({error}).') from error
