"""Published weights to the PyTorch twins' state_dicts and back (zoo.pretrained.torch_twins), in numpy.

Kernels are transposed (Dense [in, out] -> Linear [out, in]; Conv HWIO -> OIHW), the CNN's first dense
layer has its rows reordered from Flax's (h, w, c) flattening to PyTorch's (c, h, w), attention's query,
key and value kernels are stacked into in_proj_weight, BatchNorm statistics become running_mean/var.
Every step moves values without arithmetic, so a round trip is bit-exact.
"""

from __future__ import annotations

from typing import Any, Sequence

import ml_collections
import numpy as np

from zoo.train.weights import WeightsError, flatten, unflatten

# Kinds of leaf pairs: 'copy' as is, 'linear' [in, out] <-> [out, in], 'conv' HWIO <-> OIHW.
Pairs = list[tuple[str, str, str]]


def _linear(zoo: str, torch: str, bias: bool = True) -> Pairs:
  return [(f'params/{zoo}/kernel', f'{torch}.weight', 'linear')] + (
      [(f'params/{zoo}/bias', f'{torch}.bias', 'copy')] if bias else [])


def _conv(zoo: str, torch: str, bias: bool = True) -> Pairs:
  return [(f'params/{zoo}/kernel', f'{torch}.weight', 'conv')] + (
      [(f'params/{zoo}/bias', f'{torch}.bias', 'copy')] if bias else [])


def _norm(zoo: str, torch: str, statistics: bool = True) -> Pairs:
  pairs = [(f'params/{zoo}/scale', f'{torch}.weight', 'copy'), (f'params/{zoo}/bias', f'{torch}.bias', 'copy')]
  if statistics:
    pairs += [(f'batch_stats/{zoo}/mean', f'{torch}.running_mean', 'copy'),
              (f'batch_stats/{zoo}/var', f'{torch}.running_var', 'copy')]
  return pairs


def _mlp(cfg) -> Pairs:
  pairs, index = [], 1  # 0 is Flatten
  for layer in range(len(cfg.widths)):
    pairs += _linear(f'Dense_{layer}', str(index), bias=not cfg.get('batch_norm', False))
    if cfg.get('batch_norm', False):
      index += 1
      pairs += _norm(f'BatchNorm_{layer}', str(index))
    index += 3  # activation, dropout
  return pairs + _linear(f'Dense_{len(cfg.widths)}', str(index))


def _cnn(cfg) -> Pairs:
  pairs = []
  for stage in range(len(cfg.features)):
    pairs += _conv(f'Conv_{stage}', str(3 * stage))
  first = 3 * len(cfg.features) + 1  # after Flatten
  return pairs + [('params/Dense_0/kernel', f'{first}.weight', 'flattened_linear'),
                  ('params/Dense_0/bias', f'{first}.bias', 'copy')] + _linear('Dense_1', str(first + 3))


def _resnet(cfg) -> Pairs:
  pairs = _conv('stem', '0', bias=False) + _norm('BatchNorm_0', '1')
  index, block = 3, 0
  channels = cfg.widths[0]
  for stage, (blocks, width) in enumerate(zip(cfg.stage_sizes, cfg.widths)):
    for position in range(blocks):
      zoo, torch = f'BasicBlock_{block}', str(index)
      pairs += _conv(f'{zoo}/Conv_0', f'{torch}.conv1', bias=False) + _norm(f'{zoo}/BatchNorm_0', f'{torch}.norm1')
      pairs += _conv(f'{zoo}/Conv_1', f'{torch}.conv2', bias=False) + _norm(f'{zoo}/BatchNorm_1', f'{torch}.norm2')
      if (stage > 0 and position == 0) or channels != width:
        pairs += _conv(f'{zoo}/shortcut_conv', f'{torch}.shortcut.0', bias=False)
        pairs += _norm(f'{zoo}/BatchNorm_2', f'{torch}.shortcut.1')
      channels, index, block = width, index + 1, block + 1
  return pairs + _linear('Dense_0', str(index + 2))  # after pooling and Flatten


def _recurrent(cfg, directions: Sequence[str]) -> Pairs:
  pairs = []
  for layer in range(cfg.num_layers):
    for direction in directions:
      zoo = f'params/RNNEncoder_0/layer{layer}_{direction}'
      suffix = f'_l{layer}' + ('_reverse' if direction == 'backward' else '')
      pairs += [(f'{zoo}/input/kernel', f'rnn.weight_ih{suffix}', 'linear'),
                (f'{zoo}/input/bias', f'rnn.bias_ih{suffix}', 'copy'),
                (f'{zoo}/recurrent_kernel', f'rnn.weight_hh{suffix}', 'linear'),
                (f'{zoo}/recurrent_bias', f'rnn.bias_hh{suffix}', 'copy')]
  return pairs


def _pool(how: str) -> Pairs:
  return _linear('Pool_0/keys', 'pool.keys', bias=False) + _linear('Pool_0/energy', 'pool.energy', bias=False) \
      if how == 'attention' else []


def _rnn_classifier(cfg) -> Pairs:
  directions = ('forward', 'backward') if cfg.bidirectional else ('forward',)
  return ([('params/Embed_0/embedding', 'embed.weight', 'copy')] + _recurrent(cfg, directions)
          + _pool(cfg.get('pooling', 'last')) + _linear('Dense_0', 'out'))


def _rnn_lm(cfg) -> Pairs:
  return [('params/Embed_0/embedding', 'embed.weight', 'copy')] + _recurrent(cfg, ('forward',)) + \
      _linear('Dense_0', 'out')


def _transformer(cfg) -> Pairs:
  pairs = [('params/Embed_0/embedding', 'embed.weight', 'copy')]
  for layer in range(cfg.num_layers):
    zoo, torch = f'EncoderBlock_{layer}', f'encoder.layers.{layer}'
    attention = f'params/{zoo}/MultiHeadSelfAttention_0'
    pairs += [(f'{attention}/qkv/kernel', f'{torch}.self_attn.in_proj_weight', 'qkv_kernel'),
              (f'{attention}/qkv/bias', f'{torch}.self_attn.in_proj_bias', 'qkv_bias'),
              (f'{attention}/out/kernel', f'{torch}.self_attn.out_proj.weight', 'out_kernel'),
              (f'{attention}/out/bias', f'{torch}.self_attn.out_proj.bias', 'copy')]
    pairs += _norm(f'{zoo}/LayerNorm_0', f'{torch}.norm1', statistics=False)
    pairs += _norm(f'{zoo}/LayerNorm_1', f'{torch}.norm2', statistics=False)
    pairs += _linear(f'{zoo}/Dense_0', f'{torch}.linear1') + _linear(f'{zoo}/Dense_1', f'{torch}.linear2')
  pairs += _norm('LayerNorm_0', 'norm', statistics=False)
  if cfg.get('head', 'classify') != 'lm':
    pairs += _pool(cfg.get('pooling', 'mean'))
  return pairs + _linear('Dense_0', 'out')


def _vae(cfg) -> Pairs:
  return (_linear('encoder/Dense_0', 'hidden') + _linear('encoder/mean', 'mean') + _linear('encoder/logvar', 'logvar')
          + _linear('decoder/Dense_0', 'decoder.0') + _linear('decoder/Dense_1', 'decoder.2'))


FAMILIES = {'mlp': _mlp, 'cnn': _cnn, 'resnet': _resnet, 'rnn_classifier': _rnn_classifier, 'rnn_lm': _rnn_lm,
            'transformer': _transformer, 'vae': _vae}
QKV = ('query', 'key', 'value')


def pairs(model_config: ml_collections.ConfigDict) -> Pairs:
  """(zoo leaf, state_dict key, kind) for every weight of the model's twin."""
  if model_config.name not in FAMILIES:
    raise WeightsError(f'No PyTorch twin for model {model_config.name!r}; twins exist for {", ".join(FAMILIES)}.')
  return FAMILIES[model_config.name](model_config)


def _cnn_grid(model_config, input_shape) -> tuple[int, int, int]:
  """(H, W, C) of the CNN's last feature map, which its first dense layer flattens."""
  height, width, _ = input_shape
  for _ in model_config.features:
    height, width = height // 2, width // 2
  return height, width, model_config.features[-1]


def to_state_dict(model_config: ml_collections.ConfigDict, variables: dict[str, Any],
                  input_shape: Sequence[int]) -> dict[str, np.ndarray]:
  """The twin's state_dict entries (numpy; load them with torch.from_numpy) for zoo `variables`.

  `input_shape`: one example's shape ((H, W, C) or (T,); info.preprocessing['input_shape']). Buffers the zoo
  has no variable for (the Transformer's position table, BatchNorm's num_batches_tracked) are left out:
  load with `strict=False` after checking the missing keys, or keep the twin's own.
  """
  flat = flatten(variables)
  for layer in range(model_config.get('num_layers', 0) if model_config.name == 'transformer' else 0):
    attention = f'params/EncoderBlock_{layer}/MultiHeadSelfAttention_0'
    flat[f'{attention}/qkv/kernel'] = np.stack([flat.pop(f'{attention}/{n}/kernel') for n in QKV])
    flat[f'{attention}/qkv/bias'] = np.stack([flat.pop(f'{attention}/{n}/bias') for n in QKV])
  state_dict = {}
  for zoo, torch, kind in pairs(model_config):
    value = np.asarray(flat.pop(zoo))
    if kind == 'linear':
      value = value.T
    elif kind == 'conv':
      value = value.transpose(3, 2, 0, 1)
    elif kind == 'flattened_linear':
      height, width, channels = _cnn_grid(model_config, input_shape)
      value = value.reshape(height, width, channels, -1).transpose(2, 0, 1, 3).reshape(height * width * channels, -1).T
    elif kind == 'qkv_kernel':  # [3, D, H, hd] -> [3D, D]
      value = value.reshape(3, value.shape[1], -1).transpose(0, 2, 1).reshape(-1, value.shape[1])
    elif kind == 'qkv_bias':
      value = value.reshape(-1)
    elif kind == 'out_kernel':  # [H, hd, D] -> [D, H * hd]
      value = value.reshape(-1, value.shape[-1]).T
    state_dict[torch] = np.ascontiguousarray(value)
  if flat:
    raise WeightsError(f'Variables the twin has no place for: {", ".join(sorted(flat))}; the model config and '
                       'the variables differ.')
  return state_dict


def from_state_dict(model_config: ml_collections.ConfigDict, state_dict: dict[str, Any],
                    input_shape: Sequence[int]) -> dict[str, Any]:
  """Zoo variables ({'params', 'batch_stats'}, numpy) from the twin's state_dict (tensors or arrays)."""
  arrays = {k: np.asarray(v.detach().cpu().numpy() if hasattr(v, 'detach') else v) for k, v in state_dict.items()}
  flat = {}
  for zoo, torch, kind in pairs(model_config):
    value = arrays[torch]
    if kind == 'linear':
      value = value.T
    elif kind == 'conv':
      value = value.transpose(2, 3, 1, 0)
    elif kind == 'flattened_linear':
      height, width, channels = _cnn_grid(model_config, input_shape)
      value = value.T.reshape(channels, height, width, -1).transpose(1, 2, 0, 3).reshape(height * width * channels, -1)
    elif kind == 'qkv_kernel':
      heads = model_config.num_heads
      d_model = value.shape[1]
      value = value.reshape(3, d_model, d_model).transpose(0, 2, 1).reshape(3, d_model, heads, -1)
    elif kind == 'qkv_bias':
      value = value.reshape(3, model_config.num_heads, -1)
    elif kind == 'out_kernel':
      value = value.T.reshape(model_config.num_heads, -1, value.shape[0])
    if kind.startswith('qkv'):
      for name, part in zip(QKV, value):
        flat[zoo.replace('/qkv/', f'/{name}/')] = np.ascontiguousarray(part)
    else:
      flat[zoo] = np.ascontiguousarray(value)
  return unflatten(flat)
