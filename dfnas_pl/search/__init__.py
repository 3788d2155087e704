from dfnas_pl.search.darts import DartsSearch
from dfnas_pl.search.darts_space import DartsNetwork, DartsSpaceConfig, DartsSupernet
from dfnas_pl.search.export import build_from_architecture

__all__ = ["DartsNetwork", "DartsSearch", "DartsSpaceConfig", "DartsSupernet", "build_from_architecture"]
