"""Raw input (PNG paths, image arrays, strings) to the model input a published model was trained on."""

from __future__ import annotations

import os
import pathlib
from typing import Any, Sequence

import numpy as np
from PIL import Image

from zoo.data.text import Vocabulary, pad_sequences
from zoo.errors import UserError


def _read_image(path: str | os.PathLike, channels: int) -> np.ndarray:
  """u8[H, W, channels] pixels of an image file (grey for 1 channel, RGB for 3)."""
  try:
    with Image.open(path) as image:
      return np.asarray(image.convert('L' if channels == 1 else 'RGB')).reshape(image.height, image.width, channels)
  except OSError as error:
    raise UserError(f'Cannot read the image {path} ({error}); pass a PNG or JPEG file or an array.') from error


def preprocess_image(raw: Any, spec: dict[str, Any]) -> np.ndarray:
  """f32[N, H, W, C] for a path, a list of paths, or an array [H, W], [H, W, C] or [N, H, W, C].

  Files hold pixels 0-255: scaled by 1/255, or thresholded at 128 where the model saw binary images.
  uint8 arrays are scaled by the data's image_scale as in training (255, or 1 for binarized MNIST);
  float arrays are taken as they are.
  """
  height, width, channels = spec['input_shape']
  if isinstance(raw, (str, os.PathLike)) or (isinstance(raw, Sequence) and raw and
                                             isinstance(raw[0], (str, os.PathLike))):
    pixels = np.stack([_read_image(p, channels) for p in ([raw] if isinstance(raw, (str, os.PathLike)) else raw)])
    images = (pixels >= 128).astype(np.float32) if spec.get('binarize') else pixels.astype(np.float32) / 255.0
  else:
    array = np.asarray(raw)
    images = (array.astype(np.float32) / np.float32(spec['image_scale']) if array.dtype == np.uint8
              else array.astype(np.float32))
    if images.ndim == 2:
      images = images[..., None]
    if images.ndim == 3 and images.shape != (height, width, channels):
      images = images[..., None] if images.shape[1:] == (height, width) and channels == 1 else images
    if images.ndim == 3:
      images = images[None]
  if images.shape[1:] != (height, width, channels):
    raise UserError(f'Images of shape {images.shape[1:]}; this model takes {height}x{width} with {channels} '
                    f'channel(s). Resize the image to {width}x{height} pixels first.')
  return images


def preprocess_text(raw: str | Sequence[str], spec: dict[str, Any], vocab: list[str]) -> np.ndarray:
  """i32[N, T] token ids of a string or a list of strings (classifiers: padded to max_length)."""
  texts = [raw] if isinstance(raw, str) else list(raw)
  if not all(isinstance(t, str) for t in texts):
    raise UserError('Text models take a string or a list of strings.')
  vocabulary = Vocabulary(vocab)
  ids = [vocabulary.encode(t, spec['token_level']) for t in texts]
  if spec.get('language_model'):
    longest = max(len(i) for i in ids)
    if longest > spec['max_length']:
      raise UserError(f'A text of {longest} tokens; this model reads at most {spec["max_length"]}. Shorten it.')
    return pad_sequences(ids, max(longest, 1))
  return pad_sequences(ids, spec['max_length'])


def preprocess(raw: Any, spec: dict[str, Any], vocab: list[str] | None) -> np.ndarray:
  """Model input (batch axis first) for `raw`, by the published preprocessing record `spec`."""
  if spec['kind'] == 'text':
    return preprocess_text(raw, spec, vocab)
  if isinstance(raw, str) and not pathlib.Path(raw).is_file():
    raise UserError(f'No image file {raw!r}; pass the path of a PNG file or an array.')
  return preprocess_image(raw, spec)
