"""dfnas_pl: data-free neural architecture search with PyTorch Lightning.

Stages (each a LightningCLI run, talking only through files in the run directory):
synthesis (model inversion of a teacher) -> search (DARTS / ProxylessNAS / SPOS) -> retraining.
"""

import warnings

__version__ = "0.1.0"

# Lightning 2.6's pytree helper uses an API that torch 2.14 deprecates; every run would print it, and
# it is not about anything a user can change (lightning 2.6 with torch 2.14).
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated.*")
