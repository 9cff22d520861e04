"""``python -m napari_seg_box ...`` is the ``napari-seg-box`` command (also under ``torchrun``)."""

import sys

from .cli import main

sys.exit(main())
