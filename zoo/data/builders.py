"""TensorFlow-free TFDS builders that prepare datasets from their raw files.

Each builder subclasses the stock TFDS builder of the same name, so name,
version, features, splits and registered download checksums
(`_checksums_path`) are TFDS's own; only the file reading and the PNG
encoding are done with numpy/PIL instead of TensorFlow. Raw files come
through TFDS's download manager: from `manual_dir` when a local copy exists
(checksums checked by TFDS against its registered values) or downloaded.
"""

from __future__ import annotations

import csv
import gzip
import io
import pathlib
import zipfile
from typing import Iterator, Mapping

import numpy as np
import PIL.Image
import tensorflow_datasets as tfds
from tensorflow_datasets.datasets.binarized_mnist import binarized_mnist_dataset_builder as binarized_mnist_builder
from tensorflow_datasets.datasets.tiny_shakespeare import tiny_shakespeare_dataset_builder as tiny_shakespeare_builder
from tensorflow_datasets.image_classification import mnist as tfds_mnist
from tensorflow_datasets.text import glue

from zoo.data.imagenet import Imagenet2012
from zoo.errors import DataUnavailableError


def read_idx(path) -> np.ndarray:
  """Reads a gzipped IDX file (the MNIST format) into a uint8/int array."""
  with gzip.open(path, 'rb') as f:
    data = f.read()
  ndim = data[3]
  shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], 'big') for i in range(ndim))
  return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def encode_png(image: np.ndarray) -> bytes:
  """uint8 [H, W] or [H, W, C] -> PNG bytes (what tfds.features.Image stores)."""
  buffer = io.BytesIO()
  image = image.squeeze(-1) if image.ndim == 3 and image.shape[-1] == 1 else image
  PIL.Image.fromarray(image).save(buffer, format='PNG')
  return buffer.getvalue()


class _IdxImageClassification:
  """Mixin: MNIST-style datasets distributed as four gzipped IDX files."""

  RAW_FILES: Mapping[str, str] = {
      'train_images': 'train-images-idx3-ubyte.gz',
      'train_labels': 'train-labels-idx1-ubyte.gz',
      'test_images': 't10k-images-idx3-ubyte.gz',
      'test_labels': 't10k-labels-idx1-ubyte.gz',
  }

  def _split_generators(self, dl_manager):
    urls = {key: self.URL + filename for key, filename in self.RAW_FILES.items()}
    paths = dl_manager.download(urls)
    return {
        split: self._examples_from_idx(paths[f'{split}_images'], paths[f'{split}_labels'])
        for split in ('train', 'test')
    }

  def _examples_from_idx(self, images_path, labels_path) -> Iterator[tuple[int, dict]]:
    images = read_idx(images_path)
    labels = read_idx(labels_path).astype(np.int64)
    if len(images) != len(labels):
      raise DataUnavailableError(f'{images_path} has {len(images)} images but {labels_path} has {len(labels)} '
                                 'labels; replace both with the original files.')
    for index, (image, label) in enumerate(zip(images, labels)):
      yield index, {'image': encode_png(image), 'label': label}


class Mnist(_IdxImageClassification, tfds_mnist.MNIST, skip_registration=True):
  name = 'mnist'
  _checksums_path = tfds_mnist.MNIST._checksums_path


class FashionMnist(_IdxImageClassification, tfds_mnist.FashionMNIST, skip_registration=True):
  name = 'fashion_mnist'
  _checksums_path = tfds_mnist.FashionMNIST._checksums_path




class TinyShakespeare(tiny_shakespeare_builder.Builder, skip_registration=True):
  """tiny_shakespeare from `input.txt` (TFDS checks its checksum); TFDS's 90/5/5 character split."""
  name = 'tiny_shakespeare'
  _checksums_path = tiny_shakespeare_builder.Builder._checksums_path
  LOCAL_FOLDER = 'tinyshakespeare'
  URL = 'https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/'
  RAW_FILES: Mapping[str, str] = {'text': 'input.txt'}

  def _split_generators(self, dl_manager):
    text = pathlib.Path(dl_manager.download(self.URL + self.RAW_FILES['text'])).read_text()
    cut = int(len(text) * 0.9)
    train, rest = text[:cut], text[cut:]
    cut = int(len(rest) * 0.5)
    splits = {'train': train, 'validation': rest[:cut], 'test': rest[cut:]}
    return {split: self._generate_examples(split, split_text) for split, split_text in splits.items()}


class LocalFilesMixin:
  """For datasets whose local copy is not what TFDS downloads (other file names or formats).

  `prepare` verifies LOCAL_SHA256 itself and sets `local_dir`; without it the
  builder downloads TFDS's own files.
  """
  local_dir: pathlib.Path | None = None
  LOCAL_SHA256: Mapping[str, str] = {}


class BinarizedMnist(LocalFilesMixin, binarized_mnist_builder.Builder, skip_registration=True):
  """binarized_mnist from the MATLAB files (key 'X', 0/1 uint8 rows of 784), or TFDS's .amat download."""
  name = 'binarized_mnist'
  _checksums_path = binarized_mnist_builder.Builder._checksums_path
  URL = 'http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/'
  SPLITS = {'train': 'train', 'validation': 'valid', 'test': 'test'}
  RAW_FILES: Mapping[str, str] = {split: f'binarized_mnist_{part}.mat' for split, part in SPLITS.items()}
  LOCAL_SHA256 = {
      'binarized_mnist_train.mat': '79a0312c7389d855cfc97e3812de3998417c5829d8a51543b56a90a91252ae7e',
      'binarized_mnist_valid.mat': '7436afc856959075c7787025bb8a4ba2b520b9230ee39667c66aa7dd2819dd68',
      'binarized_mnist_test.mat': '5bc30222e1e7896cbccd1e1db6b28540cc1230f4d2d5473841a5f6cc54be8d38',
  }

  def _split_generators(self, dl_manager):
    if self.local_dir is not None:
      import scipy.io
      arrays = {split: scipy.io.loadmat(self.local_dir / filename)['X'] for split, filename in self.RAW_FILES.items()}
    else:
      urls = {split: f'{self.URL}binarized_mnist_{part}.amat' for split, part in self.SPLITS.items()}
      paths = dl_manager.download(urls)
      arrays = {split: np.loadtxt(path, delimiter=' ') for split, path in paths.items()}
    return {split: self._examples(array) for split, array in arrays.items()}

  def _examples(self, rows: np.ndarray) -> Iterator[tuple[int, dict]]:
    images = rows.astype(np.uint8).reshape(-1, 28, 28, 1)
    for index, image in enumerate(images):
      yield index, {'image': encode_png(image)}


class GlueSst2(LocalFilesMixin, glue.Glue, skip_registration=True):
  """glue/sst2 from GLUE's TSV files (train, dev -> validation, unlabeled test -> label -1), or the zip."""
  name = 'glue'
  _checksums_path = glue.Glue._checksums_path
  LOCAL_FOLDER = 'sst2'
  URL = 'https://dl.fbaipublicfiles.com/glue/data/SST-2.zip'
  RAW_FILES: Mapping[str, str] = {'train': 'train.tsv', 'validation': 'dev.tsv', 'test': 'test.tsv'}
  LOCAL_SHA256 = {
      'train.tsv': '48eac26399f8456935f81dd9e3a745c1430adb6c62e233ccfe22db4a0d15d1d1',
      'dev.tsv': '54a9c12c77e402fc14d6a66a506f24d999f596b0176eb777c972cccc2f9cc4b0',
      'test.tsv': '69a938605609b3e6663b4487918fe1565eb293734e6e520d0366d1d412fd2a13',
  }

  def __init__(self, **kwargs):
    super().__init__(config='sst2', **kwargs)

  def _split_generators(self, dl_manager):
    if self.local_dir is not None:
      texts = {split: (self.local_dir / filename).read_text(encoding='utf-8')
               for split, filename in self.RAW_FILES.items()}
    else:
      with zipfile.ZipFile(dl_manager.download(self.URL)) as archive:
        texts = {split: archive.read(f'SST-2/{filename}').decode('utf-8') for split, filename in self.RAW_FILES.items()}
    return {split: self._examples(text) for split, text in texts.items()}

  def _examples(self, tsv: str) -> Iterator[tuple[int, dict]]:
    rows = list(csv.DictReader(io.StringIO(tsv), delimiter='\t', quoting=csv.QUOTE_NONE))
    for index, row in enumerate(rows):
      yield index, {'idx': index, 'sentence': row['sentence'], 'label': int(row.get('label', -1))}


BUILDERS: dict[str, type[tfds.core.GeneratorBasedBuilder]] = {
    'mnist': Mnist, 'fashion_mnist': FashionMnist, 'tiny_shakespeare': TinyShakespeare,
    'binarized_mnist': BinarizedMnist, 'glue/sst2': GlueSst2, 'imagenet2012': Imagenet2012,
}
