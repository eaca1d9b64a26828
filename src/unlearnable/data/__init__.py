"""Datasets: the `ImageSet` type, readers of the standard formats, the project's on-disk format."""

from .facts import DataFacts, facts_for
from .imageset import ImageSet, to_uint8
from .resolve import download, load_base, load_data, load_source, random_subset, survey
from .sources import DATASETS, Source, read_idx, register_dataset
from .store import export_png_folder, is_dataset_dir, load_dataset_dir, load_npy, save_dataset
from .unpickle import restricted_load, restricted_load_file

__all__ = [
    "DataFacts", "facts_for", "ImageSet", "to_uint8", "download", "load_base", "load_data",
    "load_source", "random_subset", "survey", "DATASETS", "Source", "read_idx", "register_dataset",
    "export_png_folder", "is_dataset_dir", "load_dataset_dir", "load_npy", "save_dataset",
    "restricted_load", "restricted_load_file",
]
