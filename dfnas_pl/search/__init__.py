from dfnas_pl.search.darts import DartsSearch
from dfnas_pl.search.darts_space import DartsNetwork, DartsSpaceConfig, DartsSupernet
from dfnas_pl.search.export import build_from_architecture
from dfnas_pl.search.layerwise_space import LayerwiseSpaceConfig, LayerwiseSupernet
from dfnas_pl.search.proxylessnas import ProxylessSearch
from dfnas_pl.search.spos import SPOSSearch

__all__ = ["DartsNetwork", "DartsSearch", "DartsSpaceConfig", "DartsSupernet", "LayerwiseSpaceConfig",
           "LayerwiseSupernet", "ProxylessSearch", "SPOSSearch", "build_from_architecture"]
