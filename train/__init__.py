"""Training: the fit loop, losses and the ``train`` stage (data + config -> model artifact)."""

from .loop import FitResult, fit, train_stage

__all__ = ["FitResult", "fit", "train_stage"]
