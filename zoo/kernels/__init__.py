"""Fused kernels (Pallas) behind the jnp reference implementations they replace.

Each kernel lives next to its reference and a dispatcher that picks the
implementation per backend (compiled on GPU/TPU, interpreted on CPU for tests).
"""
