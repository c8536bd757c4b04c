"""imagenet2012 without TensorFlow, on a small archive made here in the official layout.

Train tar of per-class tars (4 synsets, 6 JPEGs each: one CMYK and one PNG named .JPEG, as TFDS lists them,
and one grayscale), validation tar of flat ILSVRC2012_val_NNNNNNNN.JPEG labelled by TFDS's bundled file.
"""

from __future__ import annotations

import io
import tarfile

import numpy as np
import PIL.Image
import pytest
import tensorflow_datasets as tfds

from zoo.config import default_config
from zoo.data import DataUnavailableError, build_pipeline, image_ops, prepare
from zoo.data.imagenet import validation_labels
from zoo.train.loop import train_and_evaluate

SYNSETS = ['n01739381', 'n02105855', 'n01751748', 'n09193705']
CMYK_NAME, PNG_NAME, GRAY_NAME = 'n01739381_1309.JPEG', 'n02105855_2933.JPEG', 'n01751748_7.JPEG'
PER_CLASS, NUM_VAL, SIZE = 6, 10, 32


def _picture(rng: np.random.Generator) -> np.ndarray:
  """A smooth random colour field, u8[h, w, 3] with h, w in [40, 90)."""
  h, w = rng.integers(40, 90, size=2)
  coarse = rng.integers(0, 256, size=(4, 4, 3)).astype(np.uint8)
  return np.asarray(PIL.Image.fromarray(coarse).resize((int(w), int(h)), PIL.Image.BILINEAR))


def _encode(pixels: np.ndarray, name: str) -> bytes:
  image, kind = PIL.Image.fromarray(pixels), 'JPEG'
  if name == CMYK_NAME:
    image = image.convert('CMYK')
  elif name == GRAY_NAME:
    image = image.convert('L')
  elif name == PNG_NAME:
    kind = 'PNG'
  buffer = io.BytesIO()
  image.save(buffer, format=kind, quality=90)
  return buffer.getvalue()


def _tar(files: dict[str, bytes]) -> bytes:
  buffer = io.BytesIO()
  with tarfile.open(fileobj=buffer, mode='w') as archive:
    for name, data in files.items():
      info = tarfile.TarInfo(name)
      info.size = len(data)
      archive.addfile(info, io.BytesIO(data))
  return buffer.getvalue()


@pytest.fixture(scope='module')
def archive(tmp_path_factory):
  """(raw-data root holding imagenet2012/*.tar, {file name: bytes put in the archives})."""
  rng = np.random.default_rng(0)
  root = tmp_path_factory.mktemp('raw')
  folder = root / 'imagenet2012'
  folder.mkdir()
  originals, class_tars = {}, {}
  special = {CMYK_NAME[:9]: CMYK_NAME, PNG_NAME[:9]: PNG_NAME, GRAY_NAME[:9]: GRAY_NAME}
  for synset in SYNSETS:
    names = [f'{synset}_{k}.JPEG' for k in range(PER_CLASS - 1)] + [special.get(synset, f'{synset}_99.JPEG')]
    files = {name: _encode(_picture(rng), name) for name in names}
    originals.update(files)
    class_tars[f'{synset}.tar'] = _tar(files)
  (folder / 'ILSVRC2012_img_train.tar').write_bytes(_tar(class_tars))
  val = {f'ILSVRC2012_val_{i:08d}.JPEG': _encode(_picture(rng), '') for i in range(NUM_VAL, 0, -1)}
  originals.update(val)
  (folder / 'ILSVRC2012_img_val.tar').write_bytes(_tar(val))
  return root, originals


@pytest.fixture(scope='module')
def prepared(archive, tmp_path_factory):
  root, _ = archive
  tfds_dir = str(tmp_path_factory.mktemp('tfds'))
  prepare('imagenet2012', raw_data_dir=str(root), tfds_dir=tfds_dir, allow_download=False)
  return tfds_dir


def _config(tfds_dir, **data):
  config = default_config('imagenet2012')
  config.data.update(dict(tfds_dir=tfds_dir, image_size=SIZE, batch_size=8, eval_batch_size=4, num_workers=0) | data)
  return config.data


def test_prepared_dataset_is_tfds_imagenet2012(prepared, archive):
  _, originals = archive
  builder = tfds.builder('imagenet2012', data_dir=prepared)
  assert str(builder.info.version) == '5.1.0'
  assert set(builder.info.features) == {'image', 'label', 'file_name'}
  assert builder.info.features['label'].num_classes == 1000
  assert {s: builder.info.splits[s].num_examples for s in builder.info.splits} == {
      'train': len(SYNSETS) * PER_CLASS, 'validation': NUM_VAL}
  names = builder.info.features['label'].names
  decoders = {'image': tfds.decode.SkipDecoding()}
  train = list(builder.as_data_source('train', decoders=decoders))
  assert {r['file_name'].decode() for r in train} == {n for n in originals if not n.startswith('ILSVRC')}
  for record in train:
    name = record['file_name'].decode()
    assert names[record['label']] == name.split('_')[0]
    if name in (CMYK_NAME, PNG_NAME):  # re-encoded as RGB JPEG, as TFDS does
      assert record['image'][:2] == b'\xff\xd8' and PIL.Image.open(io.BytesIO(record['image'])).mode == 'RGB'
    else:  # the original bytes
      assert record['image'] == originals[name]
  truth = validation_labels()
  for record in builder.as_data_source('validation', decoders=decoders):
    name = record['file_name'].decode()
    assert names[record['label']] == truth[int(name[15:23]) - 1]
    assert record['image'] == originals[name]


def test_train_batches_are_seeded_and_resume(prepared):
  pipeline = build_pipeline(_config(prepared), seed=3)
  iterator = pipeline.train_iterator()
  first = next(iterator)
  assert first['image'].shape == (8, SIZE, SIZE, 3) and first['image'].dtype == np.float32
  assert 0.0 <= first['image'].min() and first['image'].max() <= 1.0 and first['image'].std() > 0.01
  assert first['label'].shape == (8,) and first['label'].dtype == np.int32
  state = iterator.get_state()
  rest = [next(iterator) for _ in range(3)]  # crosses into the second epoch
  again = build_pipeline(_config(prepared), seed=3).train_iterator()
  np.testing.assert_array_equal(next(again)['image'], first['image'])
  resumed = build_pipeline(_config(prepared), seed=3).train_iterator()
  resumed.set_state(state)
  for expected in rest:
    batch = next(resumed)
    np.testing.assert_array_equal(batch['image'], expected['image'])
    np.testing.assert_array_equal(batch['label'], expected['label'])
  other = next(build_pipeline(_config(prepared), seed=4).train_iterator())
  assert not np.array_equal(other['image'], first['image'])


def test_worker_processes_give_the_same_batches_and_states(prepared):
  in_process = build_pipeline(_config(prepared), seed=5).train_iterator()
  next(in_process)
  state = in_process.get_state()  # as a checkpoint of an in-process run holds it
  expected = [next(in_process) for _ in range(3)]
  pipeline = build_pipeline(_config(prepared, num_workers=1), seed=5)
  workers = pipeline.train_iterator()
  try:
    workers.set_state(state)
    for batch in expected[:2]:
      np.testing.assert_array_equal(next(workers)['image'], batch['image'])
    assert workers.get_state() == {'next_index': 3}
    eval_batches = list(pipeline.eval_batches('validation', 4))
  finally:
    workers.close()
  resumed = build_pipeline(_config(prepared), seed=5).train_iterator()
  resumed.set_state({'next_index': 3})  # the state the worker iterator gives
  np.testing.assert_array_equal(next(resumed)['image'], expected[2]['image'])
  in_process_eval = list(build_pipeline(_config(prepared), seed=5).eval_batches('validation', 4))
  for got, want in zip(eval_batches, in_process_eval, strict=True):
    np.testing.assert_array_equal(got['image'], want['image'])
    np.testing.assert_array_equal(got['mask'], want['mask'])


def test_eval_batches_are_centre_crops_of_every_image(prepared):
  pipeline = build_pipeline(_config(prepared), seed=0)
  batches = list(pipeline.eval_batches('validation', 4))
  assert [b['image'].shape for b in batches] == [(4, SIZE, SIZE, 3)] * 3
  np.testing.assert_array_equal(np.concatenate([b['mask'] for b in batches]), [1] * NUM_VAL + [0] * 2)
  again = list(pipeline.eval_batches('validation', 4))
  np.testing.assert_array_equal(batches[1]['image'], again[1]['image'])
  assert pipeline.example_batch()['image'].shape == (1, SIZE, SIZE, 3)


def test_crop_boxes_follow_the_inception_rule():
  rng = np.random.default_rng(0)
  for _ in range(200):
    width, height = (int(v) for v in rng.integers(50, 500, size=2))
    left, top, w, h = image_ops.random_resized_crop_box(width, height, rng)
    assert 0 <= left and left + w <= width and 0 <= top and top + h <= height
  resized, box = image_ops.centre_crop_box(500, 375, 224)
  assert resized == (341, 256) and box == (58, 16, 224, 224)


@pytest.mark.parametrize('mode', ['RGB', 'L', 'CMYK'])
def test_draft_decoding_stays_close_to_full_decoding(mode):
  pixels = _picture(np.random.default_rng(1))
  big = PIL.Image.fromarray(pixels).resize((400, 300), PIL.Image.BICUBIC).convert(mode)
  buffer = io.BytesIO()
  big.save(buffer, format='JPEG', quality=95)
  data = buffer.getvalue()
  full = image_ops.decode_eval(data, 64, draft=False).astype(np.float32)
  fast = image_ops.decode_eval(data, 64, draft=True).astype(np.float32)
  assert full.shape == fast.shape == (64, 64, 3)
  assert np.abs(full - fast).mean() < 3.0
  crop = image_ops.decode_train(data, 64, np.random.default_rng(2), draft=True)
  assert crop.shape == (64, 64, 3) and crop.dtype == np.uint8
  # libjpeg-turbo through simplejpeg gives PIL's pixels
  (rw, rh), (left, top, w, h) = image_ops.centre_crop_box(400, 300, 64)
  box = (left * 400 / rw, top * 300 / rh, (left + w) * 400 / rw, (top + h) * 300 / rh)
  reference = PIL.Image.open(io.BytesIO(data)).convert('RGB').resize((64, 64), PIL.Image.BILINEAR, box=box)
  np.testing.assert_array_equal(full, np.asarray(reference))


def test_missing_archives_name_the_files_and_the_folder(tmp_path):
  with pytest.raises(DataUnavailableError) as error:
    prepare('imagenet2012', raw_data_dir=str(tmp_path), tfds_dir=str(tmp_path / 'tfds'), allow_download=False)
  message = str(error.value)
  assert '\n' not in message
  assert 'ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar' in message
  assert str(tmp_path / 'imagenet2012') in message and str(tmp_path / 'tfds' / 'downloads' / 'manual') in message


def test_a_short_run_trains_through_the_pipeline(prepared, tmp_path):
  config = default_config('imagenet2012')
  config.data = _config(prepared)
  config.model.update(dict(num_classes=1000, features=(8,), hidden=16))
  config.num_train_steps = config.log_every = config.eval_every = config.checkpoint.every = 2
  workdir = tmp_path / 'run'
  train_and_evaluate(config, str(workdir))
  lines = (workdir / 'metrics.jsonl').read_text().splitlines()
  assert '"split": "test"' in lines[-1] and (workdir / 'checkpoints' / '2').is_dir()
