"""Lightning callbacks of dfnas_pl (a top-level package, as the design card asks)."""

from callbacks.image_grid import SynthesisImageGrid
from callbacks.synthesis_progress import SynthesisProgressBar
from callbacks.wandb_artifacts import WandbArtifacts

__all__ = ["SynthesisImageGrid", "SynthesisProgressBar", "WandbArtifacts"]
