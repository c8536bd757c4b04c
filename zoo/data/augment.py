"""Seeded train-time augmentation on host batches (numpy), applied by grain's random_map.

grain derives each batch's generator from the pipeline seed and the batch's
position, so augmentation is reproducible and resumes exactly with the iterator.
"""

from __future__ import annotations

import dataclasses

import ml_collections
import numpy as np

from zoo.data.text import UNK_ID
from zoo.errors import ConfigError

Batch = dict[str, np.ndarray]


def random_translate(images: np.ndarray, rng: np.random.Generator, max_shift: int) -> np.ndarray:
  """Shifts each image by up to max_shift pixels per axis (zero fill): random crop of a zero-padded image.

  images: [B, H, W, C] -> same shape and dtype.
  """
  b, h, w, _ = images.shape
  padded = np.pad(images, ((0, 0), (max_shift, max_shift), (max_shift, max_shift), (0, 0)))
  dy, dx = rng.integers(0, 2 * max_shift + 1, size=(2, b))
  rows = dy[:, None] + np.arange(h)[None, :]
  cols = dx[:, None] + np.arange(w)[None, :]
  return padded[np.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]]


def random_flip(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Mirrors each image left-right with probability 1/2. images: [B, H, W, C]."""
  flip = rng.random(images.shape[0]) < 0.5
  return np.where(flip[:, None, None, None], images[:, :, ::-1], images)


def word_dropout(tokens: np.ndarray, rng: np.random.Generator, rate: float, pad_id: int = 0) -> np.ndarray:
  """Replaces each non-pad token by <unk> with probability `rate`. tokens: i32[B, T]."""
  drop = (rng.random(tokens.shape) < rate) & (tokens != pad_id)
  return np.where(drop, np.int32(UNK_ID), tokens)


@dataclasses.dataclass(frozen=True)
class Augment:
  """The augmentations a config asks for (all off by default).

  Attributes:
    translate: max pixel shift per axis (random crop with zero padding); 0 = off.
    flip: random left-right flips (not for digits or text).
    word_dropout: probability of replacing a token by <unk>.
    random_resized_crop: Inception-style crops of JPEG datasets (imagenet2012), done while decoding
      (zoo.data.image_ops, which also does their flips).
  """
  translate: int = 0
  flip: bool = False
  word_dropout: float = 0.0
  random_resized_crop: bool = False

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict | None) -> 'Augment':
    options = dict(config or {})
    unknown = sorted(set(options) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
      raise ConfigError(f'config.data.augment has no option {", ".join(unknown)}; it has translate, flip, '
                        'word_dropout, random_resized_crop.')
    return cls(**options)

  def __bool__(self) -> bool:
    return bool(self.translate or self.flip or self.word_dropout or self.random_resized_crop)

  def __call__(self, batch: Batch, rng: np.random.Generator) -> Batch:
    out = dict(batch)
    if 'image' in out:
      if self.translate:
        out['image'] = random_translate(out['image'], rng, self.translate)
      if self.flip:
        out['image'] = random_flip(out['image'], rng)
    if 'tokens' in out and self.word_dropout:
      out['tokens'] = word_dropout(out['tokens'], rng, self.word_dropout)
    return out
