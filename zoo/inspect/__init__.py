"""Inspection: saliency maps, integrated gradients and Transformer attention maps, drawn as PNGs."""

from zoo.inspect.attribution import attention_maps, completeness_gap, integrated_gradients, saliency
from zoo.inspect.plots import save_attention_maps, save_attributions

__all__ = ['attention_maps', 'completeness_gap', 'integrated_gradients', 'saliency', 'save_attention_maps',
           'save_attributions']
