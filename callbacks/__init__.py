"""Lightning callbacks of dfnas_pl (a top-level package, as the design card asks)."""

from callbacks.image_grid import SynthesisImageGrid

__all__ = ["SynthesisImageGrid"]
