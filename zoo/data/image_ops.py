"""JPEG decoding with Inception-style crops (train) and resize + centre crop (eval), one image at a time.

Runs inside grain's map (and so in grain's worker processes with `num_workers`). Each image's random
crop and flip come from `np.random.default_rng((batch_draw, global_row))`: the batch's generator (grain
seeds it with the pipeline seed and the batch's position, so the epoch too) gives one number, and the
row of the global batch does the rest, so an example is augmented the same way whatever the number of
processes or workers, and a restored iterator repeats the exact crops.

JPEGs are decoded by libjpeg-turbo through simplejpeg: the same pixels as PIL (whose decoder is the same
library) in 15-30% less time. PNGs, CMYK JPEGs and whatever libjpeg-turbo cannot parse go through PIL. Crops
and resizes are PIL's (antialiased bilinear), as torchvision's on PIL images. With `draft=True` the decoder
also scales down in the DCT (by n/8) when the crop is at least twice the output size: the same crop and
flip, pixels within a few levels, decoding 2-4x faster; at ImageNet's sizes that is rare (1% of train
crops, no eval image).
"""

from __future__ import annotations

import dataclasses
import io
import math
from typing import Any, Sequence

import numpy as np
import PIL.Image
import simplejpeg

Box = tuple[int, int, int, int]  # left, top, width, height in pixels of the full-size image


def random_resized_crop_box(width: int, height: int, rng: np.random.Generator,
                            scale: tuple[float, float] = (0.08, 1.0),
                            ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> Box:
  """Inception crop: area fraction ~ U(scale), log aspect ratio ~ U(log ratio); 10 tries, then a centre crop.

  The same rule as torchvision's RandomResizedCrop.get_params.
  """
  area = width * height
  log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
  for _ in range(10):
    target_area = area * rng.uniform(scale[0], scale[1])
    aspect = math.exp(rng.uniform(*log_ratio))
    w = int(round(math.sqrt(target_area * aspect)))
    h = int(round(math.sqrt(target_area / aspect)))
    if 0 < w <= width and 0 < h <= height:
      return int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1)), w, h
  in_ratio = width / height
  if in_ratio < ratio[0]:
    w, h = width, int(round(width / ratio[0]))
  elif in_ratio > ratio[1]:
    w, h = int(round(height * ratio[1])), height
  else:
    w, h = width, height
  return (width - w) // 2, (height - h) // 2, w, h


def centre_crop_box(width: int, height: int, size: int, crop_fraction: float = 0.875) -> tuple[tuple[int, int], Box]:
  """Eval geometry: shorter side resized to round(size / crop_fraction), then the centre size x size.

  Returns ((resized width, resized height), box in the resized image) -- torchvision's Resize + CenterCrop.
  """
  short = int(round(size / crop_fraction))
  if width <= height:
    resized = (short, int(short * height / width))
  else:
    resized = (int(short * width / height), short)
  left = int(round((resized[0] - size) / 2.0))
  top = int(round((resized[1] - size) / 2.0))
  return resized, (left, top, size, size)


def _is_jpeg(data: bytes) -> bool:
  return data[:2] == b'\xff\xd8'


def image_size(data: bytes) -> tuple[int, int]:
  """(width, height) from the image's header."""
  if _is_jpeg(data):
    try:
      height, width = simplejpeg.decode_jpeg_header(data)[:2]
      return width, height
    except ValueError:  # not a JPEG libjpeg-turbo reads; PIL may
      pass
  with PIL.Image.open(io.BytesIO(data)) as image:
    return image.size


def decode_rgb(data: bytes, shrink: float = 1.0) -> tuple[PIL.Image.Image, float, float]:
  """RGB image and its x and y scale against the full size: 1 unless shrink >= 2, then the decoder's smallest
  DCT scale that keeps at least 1 / shrink of each side (JPEGs in YCbCr or grey only)."""
  colorspace = None
  if _is_jpeg(data):
    try:
      height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:  # not a JPEG libjpeg-turbo reads; PIL may
      pass
  if colorspace is not None and colorspace not in ('CMYK', 'YCCK'):  # PIL's CMYK conversion differs by a level
    minimum = dict(min_width=math.ceil(width / shrink), min_height=math.ceil(height / shrink)) if shrink >= 2 else {}
    array = simplejpeg.decode_jpeg(data, colorspace='RGB', **minimum)
    return PIL.Image.fromarray(array), array.shape[1] / width, array.shape[0] / height
  image = PIL.Image.open(io.BytesIO(data))
  return (image if image.mode == 'RGB' else image.convert('RGB')), 1.0, 1.0


def decode_train(data: bytes, size: int, rng: np.random.Generator, *, crop: bool = True, flip: bool = True,
                 draft: bool = True) -> np.ndarray:
  """JPEG (or any PIL-readable) bytes -> u8[size, size, 3]: random-resized crop, resize, random flip."""
  width, height = image_size(data)
  left, top, w, h = random_resized_crop_box(width, height, rng) if crop else (0, 0, width, height)
  mirror = flip and rng.random() < 0.5
  image, sx, sy = decode_rgb(data, min(w, h) / size if draft else 1.0)
  out = image.resize((size, size), PIL.Image.BILINEAR, box=(left * sx, top * sy, (left + w) * sx, (top + h) * sy))
  if mirror:
    out = out.transpose(PIL.Image.FLIP_LEFT_RIGHT)
  return np.asarray(out)


def decode_eval(data: bytes, size: int, *, crop_fraction: float = 0.875, draft: bool = True) -> np.ndarray:
  """JPEG bytes -> u8[size, size, 3]: shorter side to size / crop_fraction, centre crop."""
  width, height = image_size(data)
  (rw, rh), (left, top, w, h) = centre_crop_box(width, height, size, crop_fraction)
  image, sx, sy = decode_rgb(data, min(width / rw, height / rh) if draft else 1.0)
  fx, fy = width / rw * sx, height / rh * sy
  box = (left * fx, top * fy, (left + w) * fx, (top + h) * fy)
  return np.asarray(image.resize((size, size), PIL.Image.BILINEAR, box=box))


@dataclasses.dataclass(frozen=True)
class DecodeImages:
  """Decodes the 'image' bytes of a batch of records into u8[B, size, size, 3] (other features stacked).

  Attributes:
    size: output height and width.
    random_resized_crop, flip: train-time augmentation (off: the whole image squashed to size x size).
    crop_fraction: eval keeps the centre crop_fraction of the shorter side.
    draft: let the JPEG decoder downscale in the DCT (see the module docstring).
  """
  size: int = 224
  random_resized_crop: bool = True
  flip: bool = True
  crop_fraction: float = 0.875
  draft: bool = True

  def train(self, records: Sequence[dict[str, Any]], rng: np.random.Generator, first_row: int = 0) -> dict:
    """Augmented batch; row k's randomness is fixed by one draw of `rng` and first_row + k."""
    draw = int(rng.integers(2**62))
    images = [decode_train(r['image'], self.size, np.random.default_rng((draw, first_row + k)),
                           crop=self.random_resized_crop, flip=self.flip, draft=self.draft)
              for k, r in enumerate(records)]
    return self._stack(records, images)

  def eval(self, records: Sequence[dict[str, Any]]) -> dict:
    """Deterministic batch: resize + centre crop."""
    images = [decode_eval(r['image'], self.size, crop_fraction=self.crop_fraction, draft=self.draft)
              for r in records]
    return self._stack(records, images)

  def _stack(self, records, images) -> dict:
    batch = {'image': np.stack(images) if images else np.zeros((0, self.size, self.size, 3), np.uint8)}
    for key in records[0] if records else ():
      if key != 'image' and not isinstance(records[0][key], (bytes, str)):
        batch[key] = np.stack([np.asarray(r[key]) for r in records])
    return batch
