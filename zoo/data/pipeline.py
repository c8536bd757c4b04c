"""grain pipelines over TFDS data sources: seeded, per-process, resumable.

The order of examples depends only on (seed, epoch): indices 0..N-1 are
shuffled by grain with the seed, reshuffled each epoch, and cut into *global*
batches; process p of P reads rows [p*B/P, (p+1)*B/P) of each global batch.
So the global batch at step s is the same whatever the process count, and
each process reads only its own rows.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
import zipfile
from typing import Any, Iterator, Mapping, Sequence

import grain
import jax
import ml_collections
import numpy as np
import tensorflow_datasets as tfds
from absl import flags, logging

from zoo.config import complete
from zoo.data.augment import Augment
from zoo.data.bucketing import LengthBuckets, TrimToLongest, token_lengths
from zoo.data.image_ops import DecodeImages
from zoo.data.preparation import prepare
from zoo.data.text import Vocabulary, pad_sequences, windows
from zoo.errors import ConfigError, DataUnavailableError

Batch = dict[str, np.ndarray]


class ArraySource:
  """A grain random-access source over in-memory arrays (one row per record)."""

  def __init__(self, columns: Mapping[str, np.ndarray]):
    self.columns = dict(columns)
    lengths = {len(v) for v in self.columns.values()}
    if len(lengths) != 1:
      raise ValueError(f'Columns have different lengths: {lengths}')
    self._length = lengths.pop()

  @classmethod
  def load(cls, source: Sequence[Mapping[str, Any]], cache_path: pathlib.Path | None = None,
           chunk: int = 4096) -> 'ArraySource':
    """Reads every record of `source` once into stacked numpy arrays.

    With `cache_path`, the decoded arrays are kept there (.npz) and reused
    while they hold as many rows as `source`; an unwritable place is skipped.
    """
    if cache_path is not None and cache_path.exists():
      try:
        with np.load(cache_path) as cached:
          columns = {key: cached[key] for key in cached.files}
        if columns and all(len(v) == len(source) for v in columns.values()):
          return cls(columns)
      except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:  # a damaged cache is rebuilt
        logging.warning('Rebuilding the decoded-data cache %s: %s', cache_path, error)
    parts = [stack_records(source.__getitems__(range(start, min(start + chunk, len(source)))))
             for start in range(0, len(source), chunk)]
    columns = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    if cache_path is not None:
      try:
        partial = cache_path.with_name(f'{cache_path.stem}.{os.getpid()}.partial.npz')
        np.savez(partial, **columns)
        partial.replace(cache_path)
      except OSError as error:
        logging.warning('Not caching decoded data at %s: %s', cache_path, error)
    return cls(columns)

  def __len__(self) -> int:
    return self._length

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    return {key: value[index] for key, value in self.columns.items()}

  def __getitems__(self, indices: Sequence[int]) -> Batch:
    indices = np.asarray(indices)
    return {key: value[indices] for key, value in self.columns.items()}


def stack_records(records: Sequence[Mapping[str, Any]] | Batch) -> Batch:
  """A list of feature dicts (or an already stacked dict) -> dict of arrays [B, ...]."""
  if isinstance(records, Mapping):
    return dict(records)
  return {key: np.stack([np.asarray(r[key]) for r in records]) for key in records[0]}


def to_model_inputs(batch: Batch, image_scale: float = 255.0) -> Batch:
  """uint8 images -> float32 image / image_scale (255: pixels to [0, 1]; 1: binary images);
  integer labels -> int32."""
  out = dict(batch)
  if 'image' in out and out['image'].dtype == np.uint8:
    out['image'] = out['image'].astype(np.float32) / np.float32(image_scale)
  if 'label' in out:
    out['label'] = out['label'].astype(np.int32)
  return out


@dataclasses.dataclass
class _ReadRows:
  """Maps a global batch of indices to this process's rows, read and preprocessed."""
  source: Any
  rows: slice
  image_scale: float = 255.0

  def __call__(self, global_indices: np.ndarray) -> Batch:
    records = self.source.__getitems__(global_indices[self.rows].tolist())
    return to_model_inputs(stack_records(records), self.image_scale)


@dataclasses.dataclass
class _ReadDecodeRows:
  """Like _ReadRows for JPEG records: decodes to u8[b, S, S, 3] (train: random crops, flips from rng), then scales."""
  source: Any
  rows: slice
  decode: DecodeImages
  image_scale: float = 255.0

  def __call__(self, global_indices: np.ndarray, rng: np.random.Generator | None = None) -> Batch:
    records = self.source.__getitems__(global_indices[self.rows].tolist())
    batch = self.decode.eval(records) if rng is None else self.decode.train(records, rng, self.rows.start)
    return to_model_inputs(batch, self.image_scale)


@dataclasses.dataclass
class _EvalBatch:
  """The local eval batch starting at example `start` of the split, padded to batch_size (mask 0 on padding)."""
  read: Any
  length: int
  batch_size: int
  rows: slice

  def __call__(self, start: int) -> Batch:
    real = np.arange(start, min(start + self.batch_size, self.length))
    indices = np.concatenate([real, np.zeros(self.batch_size - len(real), dtype=real.dtype)])
    mask = (np.arange(self.batch_size) < len(real)).astype(np.float32)
    batch = self.read(indices)
    batch['mask'] = mask[self.rows]
    return batch


def _worker_options(num_workers: int) -> grain.MultiprocessingOptions:
  """grain's worker-process options; outside an absl app, absl flags (which grain reads) keep their defaults."""
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  return grain.MultiprocessingOptions(num_workers=num_workers)


class _WorkerIterator(grain.DatasetIterator):
  """Batches k, k+1, ... of a MapDataset, made in grain worker processes.

  Its state is the position, {'next_index': k}, as the in-process iterator's is, so a checkpoint resumes
  with any num_workers (0 included); set_state restarts the workers at that batch.
  """

  def __init__(self, batches: grain.MapDataset, options: grain.ReadOptions, num_workers: int):
    super().__init__()
    self._batches, self._options, self._num_workers = batches, options, num_workers
    self._next_index, self._iterator = 0, None

  def start_prefetch(self) -> None:
    if self._iterator is None:
      dataset = self._batches[self._next_index:].to_iter_dataset(self._options)
      self._iterator = iter(dataset.mp_prefetch(_worker_options(self._num_workers)))

  def __next__(self) -> Batch:
    self.start_prefetch()
    batch = next(self._iterator)
    self._next_index += 1
    return batch

  def get_state(self) -> dict[str, Any]:
    return {'next_index': self._next_index}

  def set_state(self, state: dict[str, Any]) -> None:
    self.close()
    self._next_index = int(state['next_index'])

  def close(self) -> None:
    if self._iterator is not None:
      self._iterator.close()
      self._iterator = None


def _variable_size_images(features: Any) -> bool:
  """Whether a TFDS feature dict stores images of varying size (JPEGs to decode and crop, e.g. imagenet2012)."""
  image = features['image'] if features is not None and 'image' in features else None
  return isinstance(image, tfds.features.Image) and image.shape[0] is None


@dataclasses.dataclass
class Pipeline:
  """Train and eval input for one dataset, split per process.

  Attributes:
    sources: split name -> random-access source of feature dicts.
    train_split: the split `train_iterator` draws from.
    global_batch_size: examples per step over all processes (B).
    seed: fixes the shuffle of every epoch.
    process_index, process_count: this process and how many read in total.
    num_threads: grain read/prefetch threads for the train iterator.
    vocab: the token vocabulary of text datasets (None for others).
    label_names: your own data's label names (id i is label_names[i]), None for integer labels.
    largest_label: your own data's largest label id and where it is ('path:line'), checked against the model.
    image_scale: uint8 images are divided by it (255, or 1 for binary images).
    augment: train-time augmentation (seeded per batch by grain).
    decode: for JPEG sources (imagenet2012): decoding, crops and flips, done per batch inside grain's map.
    num_workers: grain worker processes running the reads, decoding and augmentation (0: this process).
    bucket_by_length: text train batches of similar lengths, cut to their longest (zoo.data.bucketing).
  """
  sources: dict[str, Any]
  train_split: str
  global_batch_size: int
  seed: int
  process_index: int = 0
  process_count: int = 1
  num_threads: int = 0
  vocab: Vocabulary | None = None
  image_scale: float = 255.0
  augment: Augment = Augment()
  label_names: list[str] | None = None
  largest_label: tuple[int, str] | None = None
  decode: DecodeImages | None = None
  num_workers: int = 0
  bucket_by_length: bool = False

  def __post_init__(self):
    self.local_rows = self.process_rows(self.global_batch_size)

  def process_rows(self, batch_size: int) -> slice:
    """The rows of a global batch of `batch_size` that this process reads."""
    if batch_size % self.process_count:
      raise ConfigError(f'batch size {batch_size} is not divisible by the {self.process_count} '
                       f'processes; pick a multiple of {self.process_count}.')
    per_process = batch_size // self.process_count
    return slice(self.process_index * per_process, (self.process_index + 1) * per_process)

  @property
  def steps_per_epoch(self) -> int:
    return len(self.sources[self.train_split]) // self.global_batch_size

  def example_batch(self) -> Batch:
    """One preprocessed record of the train split as a batch of 1 (for shapes)."""
    return self._reader(self.sources[self.train_split], slice(0, 1))(np.zeros(1, np.int64))

  def _reader(self, source: Any, rows: slice) -> _ReadRows | _ReadDecodeRows:
    if self.decode is None:
      return _ReadRows(source, rows, self.image_scale)
    return _ReadDecodeRows(source, rows, self.decode, self.image_scale)

  def train_iterator(self) -> grain.DatasetIterator:
    """Endless iterator of local batches {'image': f32[b, ...], 'label': i32[b]}.

    Has `get_state()`/`set_state()` (and grain's Orbax handler) to resume at
    the exact batch.
    """
    source = self.sources[self.train_split]
    indices = grain.MapDataset.range(len(source)).shuffle(seed=self.seed).repeat()
    batches = indices.batch(self.global_batch_size, drop_remainder=True)
    if self.bucket_by_length:
      batches = self._bucketed_batches(source)
    elif self.decode is None:
      batches = batches.map(_ReadRows(source, self.local_rows, self.image_scale))
    else:  # its own random stream, apart from the batch augmentation's
      decode_seed = int(np.random.SeedSequence([self.seed, 1]).generate_state(1)[0])
      batches = batches.random_map(self._reader(source, self.local_rows), seed=decode_seed)
    if self.augment:
      batches = batches.random_map(self.augment, seed=self.seed)
    options = grain.ReadOptions(num_threads=self.num_threads, prefetch_buffer_size=2 * self.num_threads)
    if self.num_workers:
      return _WorkerIterator(batches, options, self.num_workers)
    return iter(batches.to_iter_dataset(options))

  def _bucketed_batches(self, source: Any) -> grain.MapDataset:
    """Global batches of similar token lengths (zoo.data.bucketing), this process's rows, cut to the longest."""
    tokens = getattr(source, 'columns', {}).get('tokens')
    if tokens is None or tokens.ndim != 2 or 'label' not in source.columns:
      raise ConfigError('config.data.bucket_by_length needs a text classification dataset (glue/sst2, tsv); '
                        'set it to False for this one.')
    lengths = token_lengths(tokens)
    plan = LengthBuckets(lengths, self.global_batch_size, self.seed)
    read = TrimToLongest(_ReadRows(source, self.local_rows, self.image_scale), lengths,
                         multiple=max(8, tokens.shape[1] // 8))
    numbers = grain.MapDataset.range(plan.steps_per_epoch).repeat()
    return numbers.map_with_index(lambda position, _: read(plan(position)))

  def eval_batches(self, split: str, batch_size: int) -> Iterator[Batch]:
    """Every example of `split` once, in order, as local batches of fixed size.

    The last global batch is padded; its padding has `mask` 0 (real rows 1).
    """
    source = self.sources[split]
    rows = self.process_rows(batch_size)
    batch_at = _EvalBatch(self._reader(source, rows), len(source), batch_size, rows)
    starts = range(0, len(source), batch_size)
    if self.decode is None or not self.num_workers:
      yield from map(batch_at, starts)
      return
    dataset = grain.MapDataset.source(starts).map(batch_at).to_iter_dataset()
    iterator = iter(dataset.mp_prefetch(_worker_options(self.num_workers)))
    try:
      yield from iterator
    finally:
      iterator.close()


TSV_HEADER = ['sentence', 'label']


def _read_tsv(path: pathlib.Path) -> tuple[list[str], list[str], list[int]]:
  """(sentences, raw labels, line numbers) of one `sentence<TAB>label` file.

  Lines end at \n or \r\n only (U+0085 and other Unicode breaks stay inside a sentence); blank lines
  are skipped. Every problem is a DataUnavailableError naming path:line and the fix.
  """
  data = path.read_bytes()
  try:
    text = data.decode('utf-8')
  except UnicodeDecodeError as error:
    line = data[:error.start].count(b'\n') + 1
    raise DataUnavailableError(f'{path}:{line}: byte {data[error.start:error.start + 1]!r} is not UTF-8; '
                               'save the file as UTF-8.') from None
  if not text.strip():
    raise DataUnavailableError(f'{path} is empty; it needs the header sentence<TAB>label and one example a line.')
  lines = [line[:-1] if line.endswith('\r') else line for line in text.removeprefix('\ufeff').split('\n')]
  if lines[0].split('\t') != TSV_HEADER:
    raise DataUnavailableError(f'{path}:1: the first line is {lines[0][:60]!r}; it must be the header '
                               'sentence<TAB>label.')
  sentences, labels, numbers = [], [], []
  for number, line in enumerate(lines[1:], start=2):
    if not line.strip():
      continue
    fields = line.split('\t')
    if len(fields) != 2:
      raise DataUnavailableError(f'{path}:{number}: {len(fields)} tab-separated columns; every line needs exactly '
                                 'two, sentence<TAB>label (remove tabs inside the sentence).')
    if not fields[1].strip():
      raise DataUnavailableError(f'{path}:{number}: the label is empty; give every line a label.')
    sentences.append(fields[0])
    labels.append(fields[1].strip())
    numbers.append(number)
  if not sentences:
    raise DataUnavailableError(f'{path} has the header but no examples; add one sentence<TAB>label line each.')
  return sentences, labels, numbers


def read_tsv_splits(folder: str | None, splits: list[str]) -> tuple[dict[str, dict[str, np.ndarray]],
                                                                    list[str] | None, str]:
  """Your own text classification data: `<folder>/<split>.tsv`, header `sentence<TAB>label`.

  Labels are class ids (0, 1, ...) or names: when any label is not an integer, all are names, mapped to
  ids in sorted order of the train split's names. Returns (split -> {'sentence': utf-8 bytes [N],
  'label': i64[N]}, the label names or None, 'path:line' of the largest label id).
  """
  if not folder:
    raise ConfigError("config.data.name='tsv' needs --config.data.tsv_dir=DIR, a folder holding one "
                      f'<split>.tsv per split ({", ".join(splits)}), each with the header sentence<TAB>label.')
  root = pathlib.Path(folder).expanduser()
  if not root.is_dir():
    raise DataUnavailableError(f'config.data.tsv_dir={folder} is not a folder; point it at the folder holding '
                               f'{", ".join(f"{s}.tsv" for s in splits)}.')
  read = {}
  for split in splits:
    path = root / f'{split}.tsv'
    if not path.is_file():
      raise DataUnavailableError(f'{path} is missing: config.data.tsv_dir needs one <split>.tsv per split '
                                 f'({", ".join(splits)}), each with the header sentence<TAB>label; the splits '
                                 'are config.data.train_split, eval_split and test_split.')
    read[split] = (path, *_read_tsv(path))
  integer = all(re.fullmatch(r'[+-]?\d+', label) for _, _, labels, _ in read.values() for label in labels)
  names = None if integer else sorted(set(read[splits[0]][2]))
  columns, largest = {}, (-1, '')
  for split, (path, sentences, labels, numbers) in read.items():
    ids = []
    for label, number in zip(labels, numbers):
      if integer:
        value = int(label)
        if value < 0:
          raise DataUnavailableError(f'{path}:{number}: label {value} is negative; labels are class ids 0, 1, ... '
                                     '(or names such as pos/neg).')
      elif label in names:
        value = names.index(label)
      else:
        raise DataUnavailableError(f'{path}:{number}: label {label!r} does not occur in {splits[0]}.tsv, whose '
                                   f'labels are {", ".join(names)}; fix the label or add examples of it to '
                                   f'{splits[0]}.tsv.')
      if value > largest[0]:
        largest = (value, f'{path}:{number}')
      ids.append(value)
    columns[split] = {'sentence': np.array([s.encode('utf-8') for s in sentences]),
                      'label': np.array(ids, np.int64)}
  return columns, names, largest[1]


def _text_sources(columns: dict[str, dict[str, np.ndarray]], config: ml_collections.ConfigDict, splits: list[str],
                  workdir: pathlib.Path | None) -> tuple[dict[str, ArraySource], Vocabulary]:
  """Token-id sources for text: 'sentence' + 'label' columns (classification) or one 'text' (language model)."""
  classify = 'sentence' in columns[splits[0]]
  texts = {split: [t.decode('utf-8') for t in cols['sentence' if classify else 'text']]
           for split, cols in columns.items()}
  vocab = Vocabulary.build(texts[config.train_split], level=config.token_level, max_size=config.vocab_size)
  _keep_with_run(workdir, 'vocab.json', vocab.tokens, 'vocabulary', 'tokens',
                 'config.data (vocab_size, token_level, train_split)')
  sources = {}
  for split in splits:
    if classify:
      tokens = pad_sequences([vocab.encode(t, config.token_level) for t in texts[split]], config.max_length)
      sources[split] = ArraySource({'tokens': tokens, 'label': columns[split]['label']})
    else:
      sources[split] = ArraySource({'tokens': windows(vocab.encode(texts[split][0], config.token_level),
                                                      config.max_length)})
  return sources, vocab


def _keep_with_run(workdir: pathlib.Path | None, filename: str, value: list[str], what: str, unit: str,
                   source: str) -> None:
  """Saves `value` as workdir/filename (JSON) in a new run; in an existing run, refuses a different one."""
  if workdir is None:
    return
  saved_path = workdir / filename
  if saved_path.exists():
    saved = json.loads(saved_path.read_text(encoding='utf-8'))
    if saved != value:
      raise ConfigError(
          f'{saved_path} ({len(saved)} {unit}) differs from the {what} built now ({len(value)} {unit}: '
          f'{", ".join(value[:5])}{", ..." if len(value) > 5 else ""}) from {source}. '
          'Fix: use the data and config the run was made with, or a new --workdir.')
  elif jax.process_index() == 0:
    workdir.mkdir(parents=True, exist_ok=True)
    saved_path.write_text(json.dumps(value, ensure_ascii=False), encoding='utf-8')


def _tfds_sources(config: ml_collections.ConfigDict, splits: list[str], raw_data_dir: str | None,
                  workdir: pathlib.Path | None) -> tuple[dict[str, Any], Vocabulary | None]:
  """Sources of a TFDS dataset: token ids for text, (cached) records for images."""
  builder = prepare(config.name, raw_data_dir=raw_data_dir, tfds_dir=config.get('tfds_dir'))
  unknown = [s for s in splits if s not in builder.info.splits]
  if unknown:
    raise ConfigError(f'Dataset {config.name!r} has no split {unknown}; it has {sorted(builder.info.splits)}.')
  if {'sentence', 'text'} & set(builder.info.features):
    columns = {split: ArraySource.load(builder.as_data_source(split=split)).columns for split in splits}
    return _text_sources(columns, config, splits, workdir)
  sources = {}
  encoded = _variable_size_images(builder.info.features)  # JPEGs stay encoded until grain's map
  if encoded and not config.get('image_size'):
    raise ConfigError(f'Dataset {config.name!r} stores JPEGs of varying size; set config.data.image_size '
                      '(e.g. 224) to decode and crop them.')
  for split in splits:
    source = builder.as_data_source(split=split, decoders={'image': tfds.decode.SkipDecoding()} if encoded else None)
    if config.cache_in_memory and not encoded:
      cache_path = pathlib.Path(builder.data_dir) / f'zoo-decoded-{re.sub(r"[^A-Za-z0-9_.-]", "_", split)}.npz'
      source = ArraySource.load(source, cache_path)
    sources[split] = source
  return sources, None


def build_pipeline(config: ml_collections.ConfigDict, *, seed: int, raw_data_dir: str | None = None,
                   workdir: pathlib.Path | None = None) -> Pipeline:
  """Builds the pipeline named by `config` (the `data` section).

  Reads: name, train_split, eval_split, test_split, batch_size,
  eval_batch_size, cache_in_memory, num_threads, tfds_dir, image_scale
  (default 255), augment (see zoo.data.augment.Augment); for text datasets
  also token_level ('word'/'char'), vocab_size (most ids, 2 specials
  included) and max_length (tokens per example, or per LM window). Text
  datasets save their vocabulary as `workdir/vocab.json`. name='tsv' reads
  your own `<tsv_dir>/<split>.tsv` files (sentence<TAB>label) instead of TFDS.
  `config` may be a plain or partial dict: default_config(name).data fills the rest.
  """
  if not isinstance(config, ml_collections.ConfigDict):
    config = complete('data', config)
  for key in ('batch_size', 'eval_batch_size'):
    if not isinstance(config[key], int) or config[key] <= 0:
      raise ConfigError(f'config.data.{key}={config[key]!r}; it must be a positive integer.')
  if raw_data_dir is not None and not pathlib.Path(raw_data_dir).expanduser().is_dir():
    raise ConfigError(f'--data_dir {raw_data_dir} is not a folder; pass the folder that holds one sub-folder per '
                      'dataset (mnist/, sst2/, ...), or leave the flag out.')
  splits = list(dict.fromkeys([config.train_split, config.eval_split, config.test_split]))
  label_names = largest_label = None
  if config.name == 'tsv':
    columns, label_names, largest_at = read_tsv_splits(config.get('tsv_dir'), splits)
    sources, vocab = _text_sources(columns, config, splits, workdir)
    largest_label = max(int(c['label'].max()) for c in columns.values()), largest_at
    if label_names is not None:
      _keep_with_run(workdir, 'labels.json', label_names, 'label names', 'labels',
                     f'the labels of {config.train_split}.tsv')
  else:
    sources, vocab = _tfds_sources(config, splits, raw_data_dir, workdir)
  augment, decode = Augment.from_config(config.get('augment')), None
  source_info = getattr(sources[config.train_split], 'dataset_info', None)
  if _variable_size_images(getattr(source_info, 'features', None)):
    decode = DecodeImages(size=config.image_size, random_resized_crop=augment.random_resized_crop,
                          flip=augment.flip, draft=config.get('jpeg_draft', True))
    augment = dataclasses.replace(augment, random_resized_crop=False, flip=False)
  elif augment.random_resized_crop:
    raise ConfigError(f'config.data.augment.random_resized_crop needs a dataset stored as JPEG (imagenet2012); '
                      f'{config.name!r} is not. Use augment.translate instead.')
  train_size = len(sources[config.train_split])
  if config.batch_size > train_size:
    raise ConfigError(f'config.data.batch_size={config.batch_size} is larger than the {train_size} examples of the '
                      f'train split {config.train_split!r}; set --config.data.batch_size={train_size} or less.')
  return Pipeline(sources=sources, train_split=config.train_split,
                  global_batch_size=config.batch_size, seed=seed,
                  process_index=jax.process_index(), process_count=jax.process_count(),
                  num_threads=config.num_threads, vocab=vocab, image_scale=config.get('image_scale', 255.0),
                  label_names=label_names, largest_label=largest_label,
                  augment=augment, decode=decode, num_workers=config.get('num_workers', 0),
                  bucket_by_length=config.get('bucket_by_length', False))
