"""PyTorch twins of the zoo's models: the same layers, sizes and forward pass, read from config.model.

`build(model_config, input_shape)` returns the twin; `zoo.pretrained.torch_convert` maps published weights
to its state_dict and back. Inputs: images NCHW for the CNN and ResNet, [B, ...] flattened for the MLP and
the VAE; token ids i64[B, T] right-padded with 0. Padding behaves as in the zoo: the LSTM/GRU classifier
packs each sentence to its length, strided convolutions pad as Flax's 'SAME' does. experiments/benchmark.py
--twin times their train steps (experiments/torch_twins.py). PyTorch is optional (requirements-bench.txt).
"""

from __future__ import annotations

import math
from typing import Sequence

import ml_collections
import numpy as np

LAYER_NORM_EPSILON = 1e-6  # flax.linen.LayerNorm's default


def torch_module():
  """The torch module, or an ImportError naming the requirements file."""
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError as error:
    raise ImportError('PyTorch twins need torch: pip install -r requirements-bench.txt') from error
  return torch


def _mlp(torch, cfg, in_dim):
  layers, width_in = [torch.nn.Flatten()], in_dim
  batch_norm = cfg.get('batch_norm', False)
  for width in cfg.widths:
    layers += [torch.nn.Linear(width_in, width, bias=not batch_norm)]
    if batch_norm:
      layers += [torch.nn.BatchNorm1d(width, momentum=0.1)]
    layers += [torch.nn.ReLU(), torch.nn.Dropout(cfg.get('dropout_rate', 0.0))]
    width_in = width
  return torch.nn.Sequential(*layers, torch.nn.Linear(width_in, cfg.num_classes))


def _cnn(torch, cfg, image_shape):
  height, width, channels = image_shape
  layers = []
  for features in cfg.features:
    layers += [torch.nn.Conv2d(channels, features, 3, padding=1), torch.nn.ReLU(), torch.nn.AvgPool2d(2)]
    channels, height, width = features, height // 2, width // 2
  return torch.nn.Sequential(*layers, torch.nn.Flatten(), torch.nn.Linear(channels * height * width, cfg.hidden),
                             torch.nn.ReLU(), torch.nn.Dropout(cfg.get('dropout_rate', 0.0)),
                             torch.nn.Linear(cfg.hidden, cfg.num_classes))


def _same_conv(torch, channels_in, features, kernel, stride):
  """Conv2d without bias padding as Flax's 'SAME' does (for stride 2 on even sizes: one row/column after)."""

  class SameConv2d(torch.nn.Conv2d):
    def forward(self, x):
      pads = []
      for size in reversed(x.shape[2:]):
        total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
      return super().forward(torch.nn.functional.pad(x, pads))

  return SameConv2d(channels_in, features, kernel, stride, 0, bias=False)


def _resnet(torch, cfg, image_shape):
  """The twin of zoo.models.resnet.ResNet (NCHW, BatchNorm momentum 0.1 = Flax's 0.9, epsilon 1e-5)."""
  nn = torch.nn

  class BasicBlock(nn.Module):
    def __init__(self, channels_in, features, stride):
      super().__init__()
      self.conv1 = _same_conv(torch, channels_in, features, 3, stride)
      self.norm1 = nn.BatchNorm2d(features)
      self.conv2 = _same_conv(torch, features, features, 3, 1)
      self.norm2 = nn.BatchNorm2d(features)
      nn.init.zeros_(self.norm2.weight)
      self.shortcut = nn.Identity() if stride == 1 and channels_in == features else nn.Sequential(
          _same_conv(torch, channels_in, features, 1, stride), nn.BatchNorm2d(features))

    def forward(self, x):
      y = self.norm2(self.conv2(torch.relu(self.norm1(self.conv1(x)))))
      return torch.relu(self.shortcut(x) + y)

  widths = list(cfg.widths)
  layers = [_same_conv(torch, image_shape[-1], widths[0], 3, 1), nn.BatchNorm2d(widths[0]), nn.ReLU()]
  channels = widths[0]
  for stage, (blocks, width) in enumerate(zip(cfg.stage_sizes, widths)):
    for block in range(blocks):
      layers.append(BasicBlock(channels, width, 2 if stage > 0 and block == 0 else 1))
      channels = width
  return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, cfg.num_classes))


def _pool(torch, how: str, dim: int):
  """The twin of zoo.models.layers.Pool: a module (x [B, T, D], pad bool[B, T]) -> [B, D] over non-pad steps."""

  class Pool(torch.nn.Module):
    def __init__(self):
      super().__init__()
      if how == 'attention':
        self.keys = torch.nn.Linear(dim, dim, bias=False)
        self.energy = torch.nn.Linear(dim, 1, bias=False)

    def forward(self, x, pad):
      if how == 'max':
        return x.masked_fill(pad.unsqueeze(-1), torch.finfo(x.dtype).min).amax(1)
      if how == 'attention':
        scores = self.energy(torch.tanh(self.keys(x))).squeeze(-1).masked_fill(pad, torch.finfo(x.dtype).min)
        return ((scores.softmax(-1) * ~pad).unsqueeze(-1) * x).sum(1)
      weights = (~pad).unsqueeze(-1).float()
      return (x * weights).sum(1) / weights.sum(1).clamp(min=1.0)

  return Pool()


def _rnn_classifier(torch, cfg):
  rnn_class = {'lstm': torch.nn.LSTM, 'gru': torch.nn.GRU}[cfg.cell]
  directions = 2 if cfg.bidirectional else 1
  packing = torch.nn.utils.rnn

  class RNNClassifier(torch.nn.Module):
    def __init__(self):
      super().__init__()
      self.embed = torch.nn.Embedding(cfg.vocab_size, cfg.embed_dim)
      self.rnn = rnn_class(cfg.embed_dim, cfg.hidden, num_layers=cfg.num_layers, batch_first=True,
                           bidirectional=cfg.bidirectional, dropout=cfg.dropout_rate if cfg.num_layers > 1 else 0.0)
      self.dropout = torch.nn.Dropout(cfg.dropout_rate)
      self.out = torch.nn.Linear(cfg.hidden * directions, cfg.num_classes)
      self.pooling = cfg.get('pooling', 'last')
      if self.pooling != 'last':
        self.pool = _pool(torch, self.pooling, cfg.hidden * directions)

    def embeddings(self, tokens):
      return self.dropout(self.embed(tokens))

    def forward(self, tokens, embedded=None):
      """Each sentence runs over its own length (packed), as the zoo's padding-aware layers do."""
      embedded = self.embeddings(tokens) if embedded is None else embedded
      lengths = (tokens != 0).sum(1).clamp(min=1).cpu()
      packed, state = self.rnn(packing.pack_padded_sequence(embedded, lengths, batch_first=True,
                                                            enforce_sorted=False))
      if self.pooling == 'last':
        h = state[0] if isinstance(state, tuple) else state
        return self.out(self.dropout(torch.cat([h[-1 - d] for d in reversed(range(directions))], dim=-1)))
      outputs, _ = packing.pad_packed_sequence(packed, batch_first=True, total_length=tokens.shape[1])
      return self.out(self.dropout(self.pool(outputs, tokens == 0)))

  return RNNClassifier()


def _rnn_language_model(torch, cfg):
  """The twin of zoo.models.rnn.RNNLanguageModel: next-token logits [B, T, vocab] at every position."""
  rnn_class = {'lstm': torch.nn.LSTM, 'gru': torch.nn.GRU}[cfg.cell]

  class RNNLanguageModel(torch.nn.Module):
    def __init__(self):
      super().__init__()
      self.embed = torch.nn.Embedding(cfg.vocab_size, cfg.embed_dim)
      self.rnn = rnn_class(cfg.embed_dim, cfg.hidden, num_layers=cfg.num_layers, batch_first=True,
                           dropout=cfg.dropout_rate if cfg.num_layers > 1 else 0.0)
      self.dropout = torch.nn.Dropout(cfg.dropout_rate)
      self.out = torch.nn.Linear(cfg.hidden, cfg.vocab_size)

    def forward(self, tokens):
      outputs, _ = self.rnn(self.dropout(self.embed(tokens)))
      return self.out(self.dropout(outputs))

  return RNNLanguageModel()


def _transformer(torch, cfg):
  """The twin of zoo.models.transformer.TransformerEncoder, head 'classify' (directional heads too) or (causal) 'lm'."""
  class Transformer(torch.nn.Module):
    def __init__(self):
      super().__init__()
      self.embed = torch.nn.Embedding(cfg.vocab_size, cfg.d_model)
      position = np.arange(cfg.max_len)[:, None] / 10000 ** (np.arange(0, cfg.d_model, 2) / cfg.d_model)
      table = np.zeros((cfg.max_len, cfg.d_model), np.float32)
      table[:, 0::2], table[:, 1::2] = np.sin(position), np.cos(position)
      self.register_buffer('positions', torch.from_numpy(table))
      layer = torch.nn.TransformerEncoderLayer(
          cfg.d_model, cfg.num_heads, cfg.d_ff, cfg.dropout_rate, layer_norm_eps=LAYER_NORM_EPSILON,
          activation=lambda x: torch.nn.functional.gelu(x, approximate='tanh'), batch_first=True, norm_first=True)
      self.encoder = torch.nn.TransformerEncoder(layer, cfg.num_layers, enable_nested_tensor=False)
      self.norm = torch.nn.LayerNorm(cfg.d_model, eps=LAYER_NORM_EPSILON)
      self.language_model = cfg.get('head', 'classify') == 'lm'
      self.out = torch.nn.Linear(cfg.d_model, cfg.vocab_size if self.language_model else cfg.num_classes)
      self.pooling = cfg.get('pooling', 'mean')
      if not self.language_model and self.pooling != 'cls':
        self.pool = _pool(torch, self.pooling, cfg.d_model)

    def directional_mask(self, pad):
      """bool[B * H, T, T], True where blocked (zoo.kernels.attention's directional heads): keys after the
      query for the first half of the heads, before it for the second, and padding keys; a padded query
      still sees itself, so that no row is empty (PyTorch gives such rows NaN)."""
      length = pad.shape[1]
      after = torch.ones(length, length, dtype=torch.bool).triu(1)
      half = cfg.num_heads // 2
      directions = torch.stack([after] * half + [after.T] * (cfg.num_heads - half))
      blocked = directions[None] | pad[:, None, None, :]
      blocked &= ~(torch.eye(length, dtype=torch.bool) & pad[:, None, :, None])
      return blocked.flatten(0, 1)

    def embeddings(self, tokens):
      return self.embed(tokens) * math.sqrt(cfg.d_model) + self.positions[:tokens.shape[1]]

    def forward(self, tokens, embedded=None):
      x = self.embeddings(tokens) if embedded is None else embedded
      if self.language_model:  # character windows: no padding
        causal = torch.nn.Transformer.generate_square_subsequent_mask(tokens.shape[1]) if cfg.causal else None
        return self.out(self.norm(self.encoder(x, mask=causal, is_causal=bool(cfg.causal))))
      pad = tokens == 0
      if cfg.get('directional', False):
        x = self.norm(self.encoder(x, mask=self.directional_mask(pad)))
      else:
        x = self.norm(self.encoder(x, src_key_padding_mask=pad))
      return self.out(x[:, 0] if self.pooling == 'cls' else self.pool(x, pad))

  return Transformer()


def _vae(torch, cfg):
  class VAE(torch.nn.Module):
    def __init__(self):
      super().__init__()
      self.hidden = torch.nn.Linear(cfg.output_dim, cfg.hidden)
      self.mean = torch.nn.Linear(cfg.hidden, cfg.latent_dim)
      self.logvar = torch.nn.Linear(cfg.hidden, cfg.latent_dim)
      self.decoder = torch.nn.Sequential(torch.nn.Linear(cfg.latent_dim, cfg.hidden), torch.nn.ReLU(),
                                         torch.nn.Linear(cfg.hidden, cfg.output_dim))

    def encode(self, x):
      h = torch.relu(self.hidden(x.flatten(1)))
      return self.mean(h), self.logvar(h)

    def forward(self, x):
      mean, logvar = self.encode(x)
      z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
      return self.decoder(z), mean, logvar

  return VAE()


def build(model_config: ml_collections.ConfigDict, input_shape: Sequence[int]):
  """The twin of config.model as a torch.nn.Module; `input_shape`: one example's shape ((H, W, C) or (T,)).

  Raises NotImplementedError for models without a twin.
  """
  torch, cfg, name = torch_module(), model_config, model_config.name
  if name == 'mlp':
    return _mlp(torch, cfg, int(np.prod(input_shape)))
  if name in ('cnn', 'resnet'):
    return (_cnn if name == 'cnn' else _resnet)(torch, cfg, tuple(input_shape))
  builders = {'vae': _vae, 'rnn_classifier': _rnn_classifier, 'rnn_lm': _rnn_language_model,
              'transformer': _transformer}
  if name not in builders:
    raise NotImplementedError(f'no PyTorch twin for model {name!r}')
  return builders[name](torch, cfg)
