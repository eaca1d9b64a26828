"""Datasets: the `ImageSet` type, readers of the standard formats, the registry of sources, the
project's on-disk format, data identified by content, and the clean side of a protected set."""

from .clean import CleanSide, PoolSplit, clean_side, pool_split
from .facts import DataFacts, is_additive
from .fetch import download
from .identity import content_id
from .imageset import ImageSet, to_uint8
from .readers import read_idx
from .resolve import load_base, load_data, load_source, read_paths, survey
from .sources import DATASETS, Source, facts_for, get_source, register_dataset
from .store import export_png_folder, is_dataset_dir, load_dataset_dir, load_npy, save_dataset
from .subsets import random_subset, seeded_subset
from .unpickle import restricted_load, restricted_load_file

__all__ = [
    "CleanSide", "PoolSplit", "clean_side", "pool_split", "download", "DataFacts", "is_additive", "content_id",
    "ImageSet", "to_uint8", "read_idx", "load_base", "load_data", "load_source", "read_paths", "survey",
    "DATASETS", "Source", "facts_for", "get_source", "register_dataset", "export_png_folder", "is_dataset_dir",
    "load_dataset_dir", "load_npy", "save_dataset", "random_subset", "seeded_subset", "restricted_load",
    "restricted_load_file",
]
