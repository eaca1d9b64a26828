"""Import the protected datasets the original authors released, and export ours.

`import_dataset(format, path, base, out)` turns a release (PNG folder, torch file, pickle,
npy, npz) into the project format, checked against the clean base set, with a manifest that
records what was verified; `IMPORTERS` is the registry of formats, `detect_format` picks one
from a path's contents. `export_dataset` writes the layouts other tools read. See docs/import.md.
"""

from . import images as _images  # noqa: F401  (registers png-folder, ntga-npy, npz)
from . import perturbations as _perturbations  # noqa: F401  (registers ue-pt, rem-pkl, ops-npy, lsp-npy)
from .base import IMPORTERS, Imported, Importer, detect_format, import_dataset, register_importer
from .export import EXPORTERS, export_dataset
from .images import read_png

__all__ = ["IMPORTERS", "Imported", "Importer", "detect_format", "import_dataset",
           "register_importer", "EXPORTERS", "export_dataset", "read_png"]
