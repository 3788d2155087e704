"""dfnas_pl: data-free neural architecture search with PyTorch Lightning.

Stages (each a LightningCLI run, talking only through files in the run directory):
synthesis (model inversion of a teacher) -> search (DARTS / ProxylessNAS / SPOS) -> retraining.
"""

__version__ = "0.1.0"
