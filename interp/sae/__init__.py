"""Sparse autoencoders: the model and its activation rules (models.py), losses (losses.py), the trainer
(train.py), evaluations (evals.py) and SAELens-format files (io.py)."""

from interp.sae.models import BATCH_KINDS, KINDS, SAE, Codes, SAEConfig

__all__ = ["BATCH_KINDS", "KINDS", "SAE", "Codes", "SAEConfig"]
