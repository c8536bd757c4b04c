"""Serving: jax.export artifacts of trained models. `Predictor` needs only JAX (no zoo model code);
`zoo.serving.from_run.export_run` makes an artifact from a run folder."""

from zoo.serving.artifact import METADATA, PROGRAM, Predictor, export_inference, save_artifact

__all__ = ['METADATA', 'PROGRAM', 'Predictor', 'export_inference', 'save_artifact']
