"""TensorFlow-free TFDS builders that prepare datasets from their raw files.

Each builder subclasses the stock TFDS builder of the same name, so name,
version, features and splits are TFDS's own; only the file reading and the
PNG encoding are done with numpy/PIL instead of TensorFlow. Raw files come
through TFDS's download manager: from `manual_dir` when a local copy exists
(checksums checked by TFDS against its registered values) or downloaded.
"""

from __future__ import annotations

import gzip
import io
from typing import Iterator, Mapping

import numpy as np
import PIL.Image
import tensorflow_datasets as tfds
from tensorflow_datasets.image_classification import mnist as tfds_mnist

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
  PIL.Image.fromarray(image.squeeze(-1) if image.ndim == 3 and image.shape[-1] == 1 else image).save(buffer, format='PNG')
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


class FashionMnist(_IdxImageClassification, tfds_mnist.FashionMNIST, skip_registration=True):
  name = 'fashion_mnist'


BUILDERS: dict[str, type[tfds.core.GeneratorBasedBuilder]] = {
    builder.name: builder for builder in (Mnist, FashionMnist)
}
