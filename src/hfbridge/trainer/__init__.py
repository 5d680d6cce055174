"""Everything that touches ``transformers.Trainer``, in one place (this package imports transformers).

* :class:`Trainer` / :class:`TrainingArguments` -- drop-in subclasses of HF's: hfbridge batching,
  length-sorted evaluation, atomic checkpoints with best-K / last-N, O(1) exact resume and early stopping,
  all from flags.
* :class:`BatchingTrainerMixin` -- hfbridge batching for a Trainer subclass of your own.
* :class:`CheckpointCallback`, :class:`EarlyStoppingCallback`, :class:`GradualUnfreezingCallback` -- the
  ``TrainerCallback`` faces of :class:`~hfbridge.Checkpointer`, :class:`~hfbridge.EarlyStopping` and
  :class:`~hfbridge.GradualUnfreezer`.
"""

from hfbridge.trainer._arguments import TrainingArguments
from hfbridge.trainer._batching import BatchingTrainerMixin
from hfbridge.trainer._callbacks import CheckpointCallback, EarlyStoppingCallback
from hfbridge.trainer._trainer import Trainer, retention
from hfbridge.trainer._unfreeze import GradualUnfreezingCallback

__all__ = [
    "BatchingTrainerMixin",
    "CheckpointCallback",
    "EarlyStoppingCallback",
    "GradualUnfreezingCallback",
    "Trainer",
    "TrainingArguments",
    "retention",
]
