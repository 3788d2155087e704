from dfnas_pl.data.search_data import SearchDataModule
from dfnas_pl.data.synthesis_slots import SynthesisSlots
from dfnas_pl.data.synthetic import SyntheticImageDataset, SyntheticSetWriter
from dfnas_pl.data.synthetic_datamodule import SyntheticDataModule
from dfnas_pl.data.vision import FashionMNISTDataModule, VisionDataModule

__all__ = ["FashionMNISTDataModule", "SearchDataModule", "SynthesisSlots", "SyntheticDataModule", "SyntheticImageDataset",
           "SyntheticSetWriter", "VisionDataModule"]
