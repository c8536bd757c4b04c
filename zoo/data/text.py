"""Text to token ids: a vocabulary built from the train split, saved with the run.

Ids: 0 is padding, 1 is unknown; then tokens by falling frequency (ties by
the token itself), so the same train split always gives the same vocabulary.
"""

from __future__ import annotations

import collections
import json
import pathlib
from typing import Iterable, Sequence

import numpy as np

from zoo.errors import ConfigError

PAD, UNK = '<pad>', '<unk>'
PAD_ID, UNK_ID = 0, 1


class Vocabulary:
  """token <-> id. `tokens[i]` is the token of id i."""

  def __init__(self, tokens: Sequence[str]):
    self.tokens = list(tokens)
    self.ids = {token: i for i, token in enumerate(self.tokens)}

  @classmethod
  def build(cls, texts: Iterable[str], *, level: str, max_size: int, min_count: int = 1) -> 'Vocabulary':
    """Counts words (level='word', lowercased whitespace split) or characters (level='char')."""
    counts = collections.Counter(token for text in texts for token in tokenize(text, level))
    ranked = sorted((t for t, c in counts.items() if c >= min_count), key=lambda t: (-counts[t], t))
    return cls([PAD, UNK, *ranked[:max(max_size - 2, 0)]])

  def __len__(self) -> int:
    return len(self.tokens)

  def __eq__(self, other) -> bool:
    return isinstance(other, Vocabulary) and self.tokens == other.tokens

  def encode(self, text: str, level: str) -> list[int]:
    unknown = self.ids[UNK]
    return [self.ids.get(token, unknown) for token in tokenize(text, level)]

  def save(self, path: pathlib.Path) -> None:
    path.write_text(json.dumps(self.tokens, ensure_ascii=False))

  @classmethod
  def load(cls, path: pathlib.Path) -> 'Vocabulary':
    return cls(json.loads(path.read_text()))


def tokenize(text: str, level: str) -> list[str]:
  """'word': lowercased whitespace tokens; 'char': characters."""
  if level == 'word':
    return text.lower().split()
  if level == 'char':
    return list(text)
  raise ConfigError(f"config.data.token_level={level!r}; use 'word' or 'char'.")


def pad_sequences(sequences: Sequence[Sequence[int]], length: int) -> np.ndarray:
  """i32[N, length]: each sequence truncated to `length` and right-padded with 0."""
  out = np.zeros((len(sequences), length), np.int32)
  for row, ids in enumerate(sequences):
    ids = ids[:length]
    out[row, :len(ids)] = ids
  return out


def windows(ids: Sequence[int], length: int) -> np.ndarray:
  """i32[N, length + 1]: consecutive, non-overlapping windows (input + next-token target)."""
  ids = np.asarray(ids, np.int32)
  count = (len(ids) - 1) // length
  starts = np.arange(count) * length
  return ids[starts[:, None] + np.arange(length + 1)[None, :]]
