"""TensorFlow-free `imagenet2012`: TFDS's builder (name, version 5.1.0, features image/label/file_name, splits
train/validation[/test]) fed from the official manual-download archives with Python's tarfile.

The archives (from https://image-net.org/download-images after registering) go into one folder:
`ILSVRC2012_img_train.tar` (a tar of 1000 per-class tars `n01440764.tar`, ...), `ILSVRC2012_img_val.tar`
(50 000 flat JPEGs) and, optionally, `ILSVRC2012_img_test.tar` (unlabelled, label -1). Validation labels are
the file TFDS ships (`validation_labels.txt`, one synset per line in the order of the image names,
ILSVRC2012_val_00000001.JPEG first). JPEG bytes are stored as they are; like TFDS, the CMYK JPEGs and the
PNG named .JPEG are re-encoded as RGB JPEG at quality 100 (TFDS lists them by name; this builder also
recognises them by content).
"""

from __future__ import annotations

import io
import pathlib
import re
import tarfile
from typing import IO, Iterator, Mapping

import PIL.Image
import tensorflow_datasets as tfds
from tensorflow_datasets.datasets.imagenet2012 import imagenet2012_dataset_builder as imagenet_builder
from tensorflow_datasets.datasets.imagenet2012 import imagenet_common

from zoo.errors import DataUnavailableError

_VAL_NAME = re.compile(r'ILSVRC2012_val_(\d{8})\.JPEG')
_PNG_MAGIC = b'\x89PNG'


def validation_labels() -> list[str]:
  """The 50 000 validation synsets TFDS ships, row i for ILSVRC2012_val_{i+1:08d}.JPEG."""
  path = tfds.core.tfds_path(imagenet_common._VALIDATION_LABELS_FNAME)  # pylint: disable=protected-access
  return path.read_text().strip().splitlines()


def fix_image(file_name: str, data: bytes) -> bytes:
  """RGB JPEG bytes for TFDS's CMYK and PNG exceptions (by name or content); other images unchanged."""
  is_png = file_name in imagenet_builder.PNG_IMAGES or data[:4] == _PNG_MAGIC
  if not is_png and file_name not in imagenet_builder.CMYK_IMAGES:
    with PIL.Image.open(io.BytesIO(data)) as image:  # reads the header only
      if image.mode != 'CMYK':
        return data
  with PIL.Image.open(io.BytesIO(data)) as image:
    buffer = io.BytesIO()
    image.convert('RGB').save(buffer, format='JPEG', quality=100)
  return buffer.getvalue()


def _members(fileobj: IO[bytes]) -> Iterator[tuple[str, bytes]]:
  """(base name, bytes) of each regular file of a tar stream, in archive order."""
  with tarfile.open(fileobj=fileobj, mode='r|') as archive:
    for member in archive:
      if member.isfile():
        yield pathlib.PurePosixPath(member.name).name, archive.extractfile(member).read()


class Imagenet2012(imagenet_builder.Builder, skip_registration=True):
  """imagenet2012 from the manual-download tars (see the module docstring)."""
  name = 'imagenet2012'
  pkg_dir_path = imagenet_builder.Builder._get_pkg_dir_path()  # TFDS's description and citation
  MANUAL_ONLY = True  # no public download: zoo.data.preparation never tries one
  URL = 'https://image-net.org/download-images'
  RAW_FILES: Mapping[str, str] = {'train': 'ILSVRC2012_img_train.tar', 'validation': 'ILSVRC2012_img_val.tar'}
  OPTIONAL_FILES: Mapping[str, str] = {'test': 'ILSVRC2012_img_test.tar'}

  def _split_generators(self, dl_manager):
    folder = pathlib.Path(dl_manager.manual_dir)
    files = {split: folder / name for split, name in {**self.RAW_FILES, **self.OPTIONAL_FILES}.items()}
    missing = [path.name for split, path in files.items() if split in self.RAW_FILES and not path.is_file()]
    if missing:
      raise DataUnavailableError(f'{", ".join(missing)} missing from {folder}; put the ImageNet 2012 archives '
                                 f'there (from {self.URL}).')
    generators = {'train': self._train_examples(files['train']),
                  'validation': self._validation_examples(files['validation'])}
    if files['test'].is_file():
      generators['test'] = self._test_examples(files['test'])
    return generators

  def _train_examples(self, path: pathlib.Path) -> Iterator[tuple[str, dict]]:
    with path.open('rb') as f:
      for class_tar, data in _members(f):
        synset = class_tar.removesuffix('.tar')
        for file_name, image in _members(io.BytesIO(data)):
          yield file_name, {'file_name': file_name, 'image': fix_image(file_name, image), 'label': synset}

  def _validation_examples(self, path: pathlib.Path) -> Iterator[tuple[str, dict]]:
    labels = validation_labels()
    with path.open('rb') as f:
      for file_name, image in _members(f):
        match = _VAL_NAME.fullmatch(file_name)
        if not match or not 1 <= int(match.group(1)) <= len(labels):
          raise DataUnavailableError(f'{path} holds {file_name!r}, not an ILSVRC2012_val_NNNNNNNN.JPEG image; '
                                     'use the original validation archive.')
        yield file_name, {'file_name': file_name, 'image': fix_image(file_name, image),
                          'label': labels[int(match.group(1)) - 1]}

  def _test_examples(self, path: pathlib.Path) -> Iterator[tuple[str, dict]]:
    with path.open('rb') as f:
      for file_name, image in _members(f):
        yield file_name, {'file_name': file_name, 'image': fix_image(file_name, image), 'label': -1}
