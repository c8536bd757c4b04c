"""Serving artifacts: a trained model as a serialized jax.export program plus what its inputs need.

An artifact folder holds `model.jaxexport` (StableHLO with the weights baked
in and a symbolic batch dimension 'b') and `serving.json` (task, input key,
shape and dtype, image scale, and for text the vocabulary, token level and
length). Loading needs only JAX: no zoo model code, no checkpoint.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any, Callable, Sequence

import jax
import numpy as np

from zoo.errors import UserError

PROGRAM, METADATA = 'model.jaxexport', 'serving.json'


def export_inference(apply_fn: Callable[[jax.Array], Any], example_input: np.ndarray) -> jax.export.Exported:
  """jax.export of apply_fn(x) for inputs shaped like `example_input` [1, ...] with any batch size.

  Args:
    apply_fn: inference function of one array [B, ...] (weights closed over).
    example_input: one example with its leading batch axis, for the other dims and the dtype.
  """
  batch, = jax.export.symbolic_shape('b')
  spec = jax.ShapeDtypeStruct((batch, *example_input.shape[1:]), example_input.dtype)
  return jax.export.export(jax.jit(apply_fn))(spec)


def save_artifact(folder: str | pathlib.Path, exported: jax.export.Exported, metadata: dict) -> pathlib.Path:
  """Writes the program and its metadata into `folder` (created); returns the folder."""
  folder = pathlib.Path(folder)
  folder.mkdir(parents=True, exist_ok=True)
  (folder / PROGRAM).write_bytes(exported.serialize())
  (folder / METADATA).write_text(json.dumps(metadata, indent=2) + '\n')
  return folder


class Predictor:
  """A loaded artifact: `predictor(x)` runs the program on a batch x [B, ...] shaped like `input_shape`."""

  def __init__(self, folder: str | pathlib.Path):
    folder = pathlib.Path(folder)
    missing = [name for name in (PROGRAM, METADATA) if not (folder / name).exists()]
    if missing:
      raise UserError(f'{folder} is not a zoo serving artifact (missing {", ".join(missing)}); '
                      'make one with experiments/export.py --workdir=RUN --out=FOLDER.')
    self.metadata = json.loads((folder / METADATA).read_text())
    self.exported = jax.export.deserialize(bytearray((folder / PROGRAM).read_bytes()))
    self.input_shape = tuple(self.metadata['input_shape'])  # None for the batch dimension
    self.input_dtype = np.dtype(self.metadata['input_dtype'])

  def __call__(self, x: np.ndarray) -> Any:
    """Runs the program; uint8 images for a model of float inputs are scaled as in training (/ image_scale)."""
    x = np.asarray(x)
    if x.dtype == np.uint8 and np.issubdtype(self.input_dtype, np.floating):
      x = x.astype(np.float32) / np.float32(self.metadata.get('image_scale', 255.0))
    if x.ndim != len(self.input_shape) or x.shape[1:] != self.input_shape[1:]:
      raise UserError(f'The model takes inputs of shape [batch, {", ".join(map(str, self.input_shape[1:]))}]; '
                      f'got {list(x.shape)}. Resize or reshape the input to match.')
    return self.exported.call(x.astype(self.input_dtype))

  def images(self, paths: Sequence[str | pathlib.Path]) -> np.ndarray:
    """PNG/JPEG files -> f32[B, H, W, C] scaled as in training (pixel / image_scale)."""
    from PIL import Image  # pylint: disable=import-outside-toplevel
    if len(self.input_shape) != 4:
      raise UserError(f'This artifact takes {self.metadata.get("input_key", "tokens")} of shape '
                      f'[batch, {", ".join(map(str, self.input_shape[1:]))}], not images: pass --text lines'
                      f'{" (it is a text model)" if "vocab" in self.metadata else ""} or --npy=FILE.')
    height, width, channels = self.input_shape[1:]
    rows = []
    for path in paths:
      with Image.open(path) as image:
        pixels = np.asarray(image.convert('L' if channels == 1 else 'RGB'))
      if pixels.shape[:2] != (height, width):
        raise UserError(f'{path} is {pixels.shape[1]}x{pixels.shape[0]} pixels; the model takes '
                        f'{width}x{height}. Resize it first.')
      rows.append(pixels.reshape(height, width, channels))
    return np.stack(rows).astype(np.float32) / np.float32(self.metadata['image_scale'])

  def texts(self, lines: Sequence[str]) -> np.ndarray:
    """Text lines -> i32[B, max_length] token ids with the training vocabulary (unknown words -> <unk>)."""
    from zoo.data.text import Vocabulary, pad_sequences  # pylint: disable=import-outside-toplevel
    if 'vocab' not in self.metadata:
      raise UserError(f'This artifact ({self.metadata.get("model", "?")}) takes {self.metadata.get("input_key")} of '
                      f'shape [batch, {", ".join(map(str, self.input_shape[1:]))}], not text: drop --text and pass '
                      'image files or --npy=FILE.')
    vocab, level = Vocabulary(self.metadata['vocab']), self.metadata['token_level']
    return pad_sequences([vocab.encode(line, level) for line in lines], self.input_shape[1])
