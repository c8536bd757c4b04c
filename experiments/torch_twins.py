"""PyTorch eager twins of zoo models, for side-by-side train-step timing in benchmark.py.

A twin has the zoo model's layers and sizes (read from config.model), the same
loss and an equivalent optimizer; its inputs are random tensors shaped like
the zoo batch. Only the speed of one full train step is compared, so the
data's content does not matter. PyTorch is optional (requirements-bench.txt).
"""

from __future__ import annotations

import math
from typing import Callable

import ml_collections
import numpy as np


def _torch():
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError as error:
    raise ImportError('PyTorch twins need torch: pip install -r requirements-bench.txt') from error
  return torch


def _mlp(torch, cfg, in_dim):
  layers, width_in = [torch.nn.Flatten()], in_dim
  for width in cfg.widths:
    layers += [torch.nn.Linear(width_in, width)]
    if cfg.get('batch_norm', False):
      layers += [torch.nn.BatchNorm1d(width)]
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


def _resnet(torch, cfg, image_shape):
  """The twin of zoo.models.resnet.ResNet (NCHW, BatchNorm momentum 0.1 = Flax's 0.9)."""
  nn = torch.nn

  class BasicBlock(nn.Module):
    def __init__(self, channels_in, features, stride):
      super().__init__()
      self.conv1 = nn.Conv2d(channels_in, features, 3, stride, 1, bias=False)
      self.norm1 = nn.BatchNorm2d(features)
      self.conv2 = nn.Conv2d(features, features, 3, 1, 1, bias=False)
      self.norm2 = nn.BatchNorm2d(features)
      nn.init.zeros_(self.norm2.weight)
      self.shortcut = nn.Identity() if stride == 1 and channels_in == features else nn.Sequential(
          nn.Conv2d(channels_in, features, 1, stride, bias=False), nn.BatchNorm2d(features))

    def forward(self, x):
      y = self.norm2(self.conv2(torch.relu(self.norm1(self.conv1(x)))))
      return torch.relu(self.shortcut(x) + y)

  widths = list(cfg.widths)
  layers = [nn.Conv2d(image_shape[-1], widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()]
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
      outputs, state = self.rnn(self.embeddings(tokens) if embedded is None else embedded)
      if self.pooling == 'last':
        h = state[0] if isinstance(state, tuple) else state
        return self.out(self.dropout(torch.cat([h[-1 - d] for d in reversed(range(directions))], dim=-1)))
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
      layer = torch.nn.TransformerEncoderLayer(cfg.d_model, cfg.num_heads, cfg.d_ff, cfg.dropout_rate,
                                               activation=lambda x: torch.nn.functional.gelu(x, approximate='tanh'), batch_first=True, norm_first=True)
      self.encoder = torch.nn.TransformerEncoder(layer, cfg.num_layers, enable_nested_tensor=False)
      self.norm = torch.nn.LayerNorm(cfg.d_model)
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

    def forward(self, x):
      h = torch.relu(self.hidden(x.flatten(1)))
      mean, logvar = self.mean(h), self.logvar(h)
      z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
      return self.decoder(z), mean, logvar

  return VAE()


def _optimizer(torch, params, cfg: ml_collections.ConfigDict):
  name, lr = cfg.name, cfg.learning_rate
  if name in ('sgd', 'momentum', 'nesterov'):
    return torch.optim.SGD(params, lr, momentum=cfg.get('momentum', 0.9) if name != 'sgd' else 0.0,
                           nesterov=name == 'nesterov', weight_decay=cfg.get('weight_decay', 0.0))
  if name == 'adamw':
    return torch.optim.AdamW(params, lr, weight_decay=cfg.weight_decay)
  if name == 'rmsprop':
    return torch.optim.RMSprop(params, lr)
  return torch.optim.Adam(params, lr)


def build_step(config: ml_collections.ConfigDict, batch: dict, seed: int) -> tuple[Callable[[], None], dict]:
  """A no-argument function doing one eager PyTorch train step of config's model on a batch shaped like `batch`.

  Returns (step, info) with torch's version and thread count. Raises
  NotImplementedError for models without a twin (the benchmark reports null).
  """
  torch = _torch()
  torch.manual_seed(seed)
  cfg, name = config.model, config.model.name
  generator = np.random.default_rng(seed)
  if name in ('mlp', 'cnn', 'resnet', 'vae'):
    image = np.asarray(batch['image'], np.float32)
    x = torch.from_numpy(generator.random(image.shape, np.float32))
    if name in ('cnn', 'resnet'):
      model = (_cnn if name == 'cnn' else _resnet)(torch, cfg, image.shape[1:])
      x = x.permute(0, 3, 1, 2).contiguous()
    elif name == 'mlp':
      model = _mlp(torch, cfg, int(np.prod(image.shape[1:])))
    else:
      model, x = _vae(torch, cfg), torch.bernoulli(x.flatten(1))
  elif name in ('rnn_classifier', 'rnn_lm', 'transformer'):
    tokens = np.asarray(batch['tokens'])
    x = torch.from_numpy(np.where(tokens != 0, generator.integers(2, cfg.vocab_size, tokens.shape), 0)).long()
    model = {'rnn_classifier': _rnn_classifier, 'rnn_lm': _rnn_language_model, 'transformer': _transformer}[name](
        torch, cfg)
  else:
    raise NotImplementedError(f'no PyTorch twin for model {name!r}')
  language_model = name == 'rnn_lm' or cfg.get('head', 'classify') == 'lm'
  if language_model:  # zoo.tasks.LanguageModel: tokens i32[B, T+1], inputs [:, :-1], targets [:, 1:]
    x, labels = x[:, :-1].contiguous(), x[:, 1:].reshape(-1)
  else:
    labels = torch.from_numpy(generator.integers(0, cfg.get('num_classes', 2), x.shape[0])).long()
  optimizer = _optimizer(torch, model.parameters(), config.optimizer)
  clip = config.optimizer.get('grad_clip_norm', 0.0)
  average_decay = config.optimizer.get('average_decay', 0.0)
  weights = [p.detach() for p in model.parameters()]  # share storage: they follow the optimizer's in-place updates
  average = [w.clone() for w in weights] if average_decay else []
  model.train()

  epsilon = config.task.get('adversarial_epsilon', 0.0)
  consistency_weight = config.task.get('consistency_weight', 0.0)
  label_smoothing = config.task.get('label_smoothing', 0.0)

  def cross_entropy(logits, targets=labels):
    """Mean CE against the (smoothed) labels; a language model's logits [B, T, V] count every position."""
    return torch.nn.functional.cross_entropy(logits.flatten(0, -2) if language_model else logits, targets,
                                             label_smoothing=label_smoothing)

  def consistency_loss():
    """R-Drop (zoo.tasks.classification): mean CE of two dropout passes in one + w * their symmetric KL."""
    logits = model(torch.cat([x, x]))
    first, second = logits.log_softmax(-1).chunk(2)
    kl = torch.nn.functional.kl_div
    symmetric = 0.5 * (kl(second, first, log_target=True, reduction='batchmean')
                       + kl(first, second, log_target=True, reduction='batchmean'))
    return cross_entropy(logits, torch.cat([labels, labels])) + consistency_weight * symmetric

  def loss_fn():
    if name == 'vae':
      logits, mean, logvar = model(x)
      reconstruction = torch.nn.functional.binary_cross_entropy_with_logits(logits, x, reduction='sum') / len(x)
      return reconstruction + 0.5 * (logvar.exp() + mean ** 2 - 1 - logvar).sum(-1).mean()
    return consistency_loss() if consistency_weight else cross_entropy(model(x))

  def adversarial_backward():
    """The gradients of CE(x) + CE(x + r) (zoo.tasks.classification): r from the clean pass's one backward."""
    embedded = model.embeddings(x)
    embedded.retain_grad()
    cross_entropy(model(x, embedded)).backward(retain_graph=True)
    direction = embedded.grad.flatten(1)
    direction = direction * (epsilon / (direction.norm(dim=1, keepdim=True) + 1e-12))
    perturbed = embedded + direction.view_as(embedded)
    cross_entropy(model(x, perturbed)).backward()

  def step():
    optimizer.zero_grad(set_to_none=True)
    if epsilon:
      adversarial_backward()
    else:
      loss_fn().backward()
    if clip:
      torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    if average:  # the params average of zoo.train.optim.params_average, at its long-run rate
      with torch.no_grad():
        torch._foreach_lerp_(average, weights, 1.0 - average_decay)  # pylint: disable=protected-access

  return step, {'torch_version': torch.__version__, 'torch_threads': torch.get_num_threads()}
