"""The data layer on the real MNIST files: offline preparation, grain order, resumption."""

from __future__ import annotations

import functools
import http.server
import shutil
import threading

import numpy as np
import pytest
import tensorflow_datasets as tfds
from conftest import RAW_DATA_DIR
from tensorflow_datasets.core.download import downloader

from zoo.data import DataUnavailableError, build_pipeline, prepare
from zoo.data.builders import read_idx
from zoo.data.pipeline import ArraySource, Pipeline


def test_prepared_mnist_matches_raw_files(tfds_dir):
  builder = tfds.builder('mnist', data_dir=tfds_dir)
  assert builder.info.splits['train'].num_examples == 60000
  assert builder.info.splits['test'].num_examples == 10000
  assert builder.info.features['image'].shape == (28, 28, 1)
  prepared = ArraySource.load(tfds.data_source('mnist', data_dir=tfds_dir, split='test')).columns
  assert prepared['image'].dtype == np.uint8 and prepared['image'].shape == (10000, 28, 28, 1)
  raw_images = read_idx(RAW_DATA_DIR / 'mnist' / 't10k-images-idx3-ubyte.gz')
  raw_labels = read_idx(RAW_DATA_DIR / 'mnist' / 't10k-labels-idx1-ubyte.gz')
  # TFDS stores records in its own (seeded) order: compare as multisets of (pixels, label).
  as_set = lambda images, labels: sorted(img.tobytes() + bytes([lab]) for img, lab in zip(images, labels))
  assert as_set(prepared['image'][..., 0], prepared['label']) == as_set(raw_images, raw_labels)


def test_pipeline_batches_have_model_dtypes_and_all_labels(mnist_config):
  pipeline = build_pipeline(mnist_config.data, seed=0)
  batch = next(pipeline.train_iterator())
  assert batch['image'].shape == (128, 28, 28, 1) and batch['image'].dtype == np.float32
  assert 0.0 <= batch['image'].min() and batch['image'].max() <= 1.0
  assert batch['label'].dtype == np.int32
  assert set(np.unique(batch['label'])) == set(range(10))
  assert pipeline.steps_per_epoch == 60000 // 128


def _toy_pipeline(seed, batch_size=5, process_index=0, process_count=1):
  source = ArraySource({'label': np.arange(10)})
  return Pipeline(sources={'train': source}, train_split='train', global_batch_size=batch_size, seed=seed,
                  process_index=process_index, process_count=process_count)


def _labels(iterator, n):
  return np.concatenate([next(iterator)['label'] for _ in range(n)])


def test_shuffle_depends_only_on_seed_and_changes_each_epoch():
  first = _labels(_toy_pipeline(seed=1).train_iterator(), 6)
  again = _labels(_toy_pipeline(seed=1).train_iterator(), 6)
  other = _labels(_toy_pipeline(seed=2).train_iterator(), 6)
  np.testing.assert_array_equal(first, again)
  assert not np.array_equal(first, other)
  epochs = first.reshape(3, 10)
  for epoch in epochs:
    assert sorted(epoch) == list(range(10))
  assert not np.array_equal(epochs[0], epochs[1])


def test_iterator_state_restores_the_exact_next_batch():
  iterator = _toy_pipeline(seed=3).train_iterator()
  _labels(iterator, 7)
  saved = iterator.get_state()
  expected = _labels(iterator, 3)
  resumed = _toy_pipeline(seed=3).train_iterator()
  resumed.set_state(saved)
  np.testing.assert_array_equal(_labels(resumed, 3), expected)


def test_processes_read_disjoint_rows_of_the_same_global_batch():
  whole = _labels(_toy_pipeline(seed=4, batch_size=4).train_iterator(), 5).reshape(5, 4)
  parts = [_labels(_toy_pipeline(seed=4, batch_size=4, process_index=p, process_count=2).train_iterator(), 5)
           .reshape(5, 2) for p in range(2)]
  np.testing.assert_array_equal(np.concatenate(parts, axis=1), whole)
  with pytest.raises(ValueError, match='not divisible by the 3 processes'):
    _toy_pipeline(seed=4, batch_size=4, process_count=3)


def test_eval_batches_cover_every_example_once_with_padding_masked():
  pipeline = _toy_pipeline(seed=0)
  batches = list(pipeline.eval_batches('train', batch_size=4))
  assert [len(b['label']) for b in batches] == [4, 4, 4]
  mask = np.concatenate([b['mask'] for b in batches])
  labels = np.concatenate([b['label'] for b in batches])
  assert mask.sum() == 10
  np.testing.assert_array_equal(labels[mask == 1], np.arange(10))


@pytest.fixture
def no_default_raw_dirs(tmp_path, monkeypatch):
  """Runs in an empty folder without $ZOO_DATA_DIR, so only the given raw dir is searched."""
  monkeypatch.chdir(tmp_path)
  monkeypatch.delenv('ZOO_DATA_DIR', raising=False)


def test_missing_data_names_the_files_and_where_to_put_them(tmp_path, no_default_raw_dirs):
  with pytest.raises(DataUnavailableError) as error:
    prepare('fashion_mnist', raw_data_dir=str(tmp_path / 'raw'), tfds_dir=str(tmp_path / 'tfds'),
            allow_download=False)
  message = str(error.value)
  assert 'train-images-idx3-ubyte.gz' in message and 't10k-labels-idx1-ubyte.gz' in message
  assert str(tmp_path / 'raw' / 'fashion_mnist') in message
  assert not (tmp_path / 'tfds' / 'fashion_mnist' / '3.0.1' / 'dataset_info.json').exists()


def test_incomplete_local_copy_lists_the_missing_files(tmp_path, no_default_raw_dirs):
  folder = tmp_path / 'raw' / 'fashion_mnist'
  folder.mkdir(parents=True)
  shutil.copy(RAW_DATA_DIR / 'fashion_mnist' / 'train-labels-idx1-ubyte.gz', folder)
  with pytest.raises(DataUnavailableError, match=r'incomplete; missing: train-images-idx3-ubyte.gz'):
    prepare('fashion_mnist', raw_data_dir=str(tmp_path / 'raw'), tfds_dir=str(tmp_path / 'tfds'),
            allow_download=False)


def test_corrupt_local_file_is_rejected_by_checksum(tmp_path, no_default_raw_dirs):
  folder = tmp_path / 'raw' / 'fashion_mnist'
  shutil.copytree(RAW_DATA_DIR / 'fashion_mnist', folder)
  labels = folder / 't10k-labels-idx1-ubyte.gz'
  labels.write_bytes(labels.read_bytes()[:-100])
  with pytest.raises(DataUnavailableError, match='does not match its TFDS checksum'):
    prepare('fashion_mnist', raw_data_dir=str(tmp_path / 'raw'), tfds_dir=str(tmp_path / 'tfds'))
  assert labels.exists()


def test_unknown_dataset_names_the_known_ones():
  with pytest.raises(ValueError, match="Unknown dataset 'mnits'.*mnist"):
    prepare('mnits')


@pytest.fixture
def fashion_mnist_server(monkeypatch):
  """Serves the real raw files over HTTP on 127.0.0.1, in place of the dataset's host."""
  handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(RAW_DATA_DIR / 'fashion_mnist'))
  server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
  threading.Thread(target=server.serve_forever, daemon=True).start()
  local = f'http://127.0.0.1:{server.server_port}/'
  origin = tfds.image_classification.FashionMNIST.URL
  requested = []
  real_open_url = downloader._open_url

  def open_local(url, **kwargs):
    requested.append(url)
    return real_open_url(url.replace(origin, local), **kwargs)

  monkeypatch.setattr(downloader, '_open_url', open_local)
  monkeypatch.setattr('zoo.data.preparation.check_reachable', lambda url: None)
  yield requested
  server.shutdown()


@pytest.mark.xdist_group('datasets')  # shares the session's prepared datasets with test_zoo_learning.py
def test_download_road_goes_through_tfds_and_builds_the_same_dataset(tmp_path, tfds_dir, no_default_raw_dirs,
                                                                   fashion_mnist_server):
  downloaded = prepare('fashion_mnist', raw_data_dir=str(tmp_path / 'none'), tfds_dir=str(tmp_path / 'online'))
  assert len(fashion_mnist_server) == 4
  offline = prepare('fashion_mnist', raw_data_dir=str(RAW_DATA_DIR), tfds_dir=tfds_dir)
  assert downloaded.info.features.to_json() == offline.info.features.to_json()
  for split in ('train', 'test'):
    assert downloaded.info.splits[split].num_examples == offline.info.splits[split].num_examples
  online_test, offline_test = downloaded.as_data_source('test'), offline.as_data_source('test')
  for index in (0, 5000, 9999):
    np.testing.assert_array_equal(online_test[index]['image'], offline_test[index]['image'])
    assert online_test[index]['label'] == offline_test[index]['label']


def test_a_dataset_another_process_prepared_meanwhile_is_used(tmp_path, no_default_raw_dirs, monkeypatch):
  """Two runs preparing one dataset at once: TFDS's final rename fails for the later one, whose data is in place."""
  original = tfds.core.DatasetBuilder.download_and_prepare

  def lose_the_race(builder, **kwargs):
    original(builder, **kwargs)  # stands for the other process's copy landing in the same place
    raise FileExistsError(f'Cannot rename the incomplete folder: {builder.data_dir} already exists.')

  monkeypatch.setattr(tfds.core.DatasetBuilder, 'download_and_prepare', lose_the_race)
  shakespeare = prepare('tiny_shakespeare', raw_data_dir=str(RAW_DATA_DIR), tfds_dir=str(tmp_path / 'tfds'),
                        allow_download=False)
  assert shakespeare.is_prepared() and len(shakespeare.as_data_source('test')[0]['text']) > 1000

  def fail_to_rename(builder, **kwargs):
    raise FileExistsError('Cannot rename the incomplete folder.')

  monkeypatch.setattr(tfds.core.DatasetBuilder, 'download_and_prepare', fail_to_rename)
  with pytest.raises(FileExistsError):  # nothing in place: not a lost race, the error stands
    prepare('tiny_shakespeare', raw_data_dir=str(RAW_DATA_DIR), tfds_dir=str(tmp_path / 'empty'),
            allow_download=False)


@pytest.mark.xdist_group('datasets')
def test_other_datasets_prepare_offline_with_tfds_splits(tfds_dir, no_default_raw_dirs):
  import scipy.io
  shakespeare = prepare('tiny_shakespeare', raw_data_dir=str(RAW_DATA_DIR), tfds_dir=tfds_dir, allow_download=False)
  text = (RAW_DATA_DIR / 'tinyshakespeare' / 'input.txt').read_text()
  pieces = [shakespeare.as_data_source(split)[0]['text'].decode() for split in ('train', 'validation', 'test')]
  assert ''.join(pieces) == text and len(pieces[0]) == int(len(text) * 0.9)

  sst2 = prepare('glue/sst2', raw_data_dir=str(RAW_DATA_DIR), tfds_dir=tfds_dir, allow_download=False)
  assert {s: sst2.info.splits[s].num_examples for s in ('train', 'validation', 'test')} == \
      {'train': 67349, 'validation': 872, 'test': 1821}
  dev = ArraySource.load(sst2.as_data_source('validation')).columns
  assert set(dev['label']) == {0, 1}
  first_dev_line = (RAW_DATA_DIR / 'sst2' / 'dev.tsv').read_text().splitlines()[1]
  assert first_dev_line.split('\t')[0].encode() in set(dev['sentence'])

  binarized = prepare('binarized_mnist', raw_data_dir=str(RAW_DATA_DIR), tfds_dir=tfds_dir, allow_download=False)
  test_images = ArraySource.load(binarized.as_data_source('test')).columns['image']
  raw = scipy.io.loadmat(RAW_DATA_DIR / 'binarized_mnist' / 'binarized_mnist_test.mat')['X'].reshape(-1, 28, 28, 1)
  assert test_images.shape == (10000, 28, 28, 1) and set(np.unique(test_images)) == {0, 1}
  as_rows = lambda images: sorted(map(bytes, images.astype(np.uint8).reshape(10000, -1)))
  assert as_rows(test_images) == as_rows(raw)


def test_local_copy_not_matching_zoo_checksum_is_refused(tmp_path, no_default_raw_dirs):
  folder = tmp_path / 'raw' / 'sst2'
  shutil.copytree(RAW_DATA_DIR / 'sst2', folder)
  (folder / 'dev.tsv').write_text('sentence\tlabel\nedited\t1\n')
  with pytest.raises(DataUnavailableError, match=r'dev.tsv does not match its checksum'):
    prepare('glue/sst2', raw_data_dir=str(tmp_path / 'raw'), tfds_dir=str(tmp_path / 'tfds'), allow_download=False)


def _image_pipeline(seed, **augment):
  from zoo.data.augment import Augment
  images = np.arange(8 * 6 * 6, dtype=np.uint8).reshape(8, 6, 6, 1)
  return Pipeline(sources={'train': ArraySource({'image': images, 'label': np.arange(8)})}, train_split='train',
                  global_batch_size=4, seed=seed, augment=Augment(**augment))


def test_augmentation_is_seeded_per_batch_and_resumes_exactly():
  plain = next(_image_pipeline(0).train_iterator())
  first = _image_pipeline(0, translate=2, flip=True).train_iterator()
  batches = [next(first) for _ in range(3)]
  again = [next(_image_pipeline(0, translate=2, flip=True).train_iterator()) for _ in range(1)]
  np.testing.assert_array_equal(batches[0]['image'], again[0]['image'])
  assert not np.array_equal(batches[0]['image'], plain['image'])
  np.testing.assert_array_equal(batches[0]['label'], plain['label'])
  iterator = _image_pipeline(0, translate=2, flip=True).train_iterator()
  next(iterator)
  state = iterator.get_state()
  resumed = _image_pipeline(0, translate=2, flip=True).train_iterator()
  resumed.set_state(state)
  np.testing.assert_array_equal(next(resumed)['image'], batches[1]['image'])


def test_translate_flip_and_word_dropout_do_what_they_say():
  from zoo.data.augment import random_flip, random_translate, word_dropout
  rng = np.random.default_rng(0)
  image = np.zeros((1, 5, 5, 1), np.uint8)
  image[0, 2, 2, 0] = 9
  shifted = random_translate(np.repeat(image, 50, axis=0), rng, 1)
  positions = {tuple(np.argwhere(s[..., 0] == 9)[0]) for s in shifted}
  assert positions <= {(r, c) for r in (1, 2, 3) for c in (1, 2, 3)} and len(positions) > 3
  assert all(s.sum() == 9 for s in shifted)
  ramp = np.arange(4, dtype=np.uint8).reshape(1, 1, 4, 1).repeat(20, axis=0)
  flipped = random_flip(ramp, rng)
  assert {tuple(f[0, :, 0]) for f in flipped} == {(0, 1, 2, 3), (3, 2, 1, 0)}
  tokens = np.array([[5, 6, 7, 8, 0, 0]] * 200, np.int32)
  dropped = word_dropout(tokens, rng, 0.25)
  assert (dropped[:, 4:] == 0).all()
  assert 0.15 < (dropped[:, :4] == 1).mean() < 0.35


def test_your_own_tsv_files_load_through_the_same_layer(tmp_path):
  from conftest import load_config
  folder = tmp_path / 'reviews'
  folder.mkdir()
  (folder / 'train.tsv').write_text('sentence\tlabel\ngreat fun\t1\nawful and dull\t0\ngreat great\t1\n')
  (folder / 'dev.tsv').write_text('sentence\tlabel\nfun but dull\t1\n')
  config = load_config('sst2_lstm').data
  config.update(dict(name='tsv', eval_split='dev', test_split='dev', batch_size=2, eval_batch_size=1, max_length=4))
  config.tsv_dir = str(folder)
  pipeline = build_pipeline(config, seed=0, workdir=tmp_path / 'run')
  assert pipeline.vocab.tokens[:3] == ['<pad>', '<unk>', 'great']
  assert (tmp_path / 'run' / 'vocab.json').exists()
  [dev] = list(pipeline.eval_batches('dev', 1))
  fun, dull = pipeline.vocab.ids['fun'], pipeline.vocab.ids['dull']
  np.testing.assert_array_equal(dev['tokens'], [[fun, 1, dull, 0]])  # 'but' is unknown
  (folder / 'dev.tsv').write_text('text,label\nno tabs here,1\n')
  message = r'dev.tsv:1: the first line is .* must be the header sentence<TAB>label'
  with pytest.raises(DataUnavailableError, match=message):
    build_pipeline(config, seed=0)


def test_damaged_decoded_cache_is_rebuilt(tmp_path):
  records = [{'x': np.int64(i)} for i in range(5)]
  source = type('Source', (), {'__len__': lambda self: 5,
                               '__getitems__': lambda self, idx: [records[i] for i in idx]})()
  cache = tmp_path / 'cache.npz'
  cache.write_bytes(b'PK\x03\x04 truncated')
  np.testing.assert_array_equal(ArraySource.load(source, cache).columns['x'], np.arange(5))
  np.testing.assert_array_equal(np.load(cache)['x'], np.arange(5))
