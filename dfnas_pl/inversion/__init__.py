from dfnas_pl.inversion.module import ModelInversion

__all__ = ["ModelInversion"]
