"""napari dock widgets: thin shells over :mod:`napari_seg_box.core` (annotate, train, predict, quantify).

Importing this package first installs a guard against a crash that hits users whose OpenGL is Mesa
(virtual machines, remote desktops, Intel/AMD graphics, Xvfb): torchvision (needed by
segmentation-models-pytorch) imports ``torch._dynamo``, which imports ``triton``; triton's bundled
LLVM clashes with the LLVM that Mesa's llvmpipe has already loaded once napari has drawn, and the
process segfaults. When ``triton`` is not loaded yet, it is marked as not installed
(``sys.modules["triton"] = None``): ``import triton`` then raises ImportError and
``importlib.util.find_spec("triton")`` returns None, which torch handles as "no triton"
(``torch.compile`` GPU kernels are the only thing lost; the widgets do not use them).
Set ``SEGBOX_ALLOW_TRITON=1`` to turn the guard off.
"""

from __future__ import annotations

import os
import sys


def _guard_triton() -> bool:
    """Mark triton as unavailable unless it is already imported (or the user allowed it)."""
    if os.environ.get("SEGBOX_ALLOW_TRITON", "") == "1":
        return False
    if sys.modules.get("triton", False) is not False:  # loaded already (or already blocked)
        return sys.modules["triton"] is None
    sys.modules["triton"] = None
    return True


TRITON_BLOCKED = _guard_triton()

__all__ = ["TRITON_BLOCKED"]
