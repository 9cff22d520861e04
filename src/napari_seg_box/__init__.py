"""napari-seg-box: annotate, train, evaluate and quantify microscopy segmentation in one box.

The headless pipeline lives in :mod:`napari_seg_box.core` and is usable from scripts and the napari
console without Qt::

    from napari_seg_box.core import Project
    project = Project.open("my_project.zarr")
"""

__version__ = "0.1.0"

import os as _os

# albumentations asks PyPI for a newer version on import (a blocking network call): never from lab
# servers and clusters, which are often offline. Setting the variable to 0 turns the check back on.
_os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
