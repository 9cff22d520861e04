"""Training a U-Net from the annotations of a project store: one code path for widgets, CLI and scripts.

:func:`iter_train` is a generator: it yields typed events (:mod:`..events`) and returns the id of the
model version it saved; :func:`train` runs it to the end. The package is split by job:

- :mod:`.config`     the :class:`TrainConfig` (validated once, saved with every version);
- :mod:`.prepare`    annotated images -> normalised regions, targets, weights, validation split;
- :mod:`.auto`       automatic settings (patch size, batch size, learning rate);
- :mod:`.sampling`   random patches and batches;
- :mod:`.runtime`    device, precision, one optimisation step, the learning-rate schedule;
- :mod:`.checkpoint` resumable checkpoints in the store;
- :mod:`.loop`       the loop itself (resume, fine-tuning, out-of-memory retries, validation);
- :mod:`.finetune`   the short warm-started run that updates a version with new corrections.
"""

from .auto import auto_batch_size, auto_patch_size, lr_find
from .checkpoint import unfinished_runs
from .config import SCHEDULES, TrainConfig
from .finetune import finetune_config
from .loop import iter_train, train
from .prepare import boundary_mask
from .runtime import lr_at

__all__ = [
    "SCHEDULES",
    "TrainConfig",
    "auto_batch_size",
    "auto_patch_size",
    "boundary_mask",
    "finetune_config",
    "iter_train",
    "lr_at",
    "lr_find",
    "train",
    "unfinished_runs",
]
