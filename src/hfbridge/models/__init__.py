"""Load a pretrained model for a task; freeze, gradually unfreeze and layer-wise tune it on any architecture.

* :func:`load_pretrained` -- the ``AutoModelFor...`` class of a task, label maps, freezing.
* :class:`FreezeSpec` / :func:`freeze` -- one spec (``"embeddings,layers:4"``) for every architecture.
* :class:`GradualUnfreezer` -- ULMFiT-style thawing as a pure function of the epoch/step; a
``TrainerCallback``.
* :func:`layerwise_param_groups` -- layer-wise learning-rate decay.
* :func:`summary` -- a per-module parameter table (string and dict forms).
* LoRA models (``peft.PeftModel``) work with all of the above (the task model is at ``base_model.model``);
  ``load_pretrained(..., lora=...)`` builds one.

Importing this package imports ``torch`` lazily and never ``transformers`` or ``datasets``.
"""

from hfbridge.models._freeze import FreezeReport, freeze
from hfbridge.models._layout import BlockStack, ModelLayout, ResolutionError, resolve_layout
from hfbridge.models._load import AUTO_CLASSES, load_pretrained
from hfbridge.models._params import ModelSummary, SummaryRow, layerwise_param_groups, summary
from hfbridge.models._spec import FreezeSpec
from hfbridge.models._unfreeze import GradualUnfreezer

__all__ = [
    "AUTO_CLASSES",
    "BlockStack",
    "FreezeReport",
    "FreezeSpec",
    "GradualUnfreezer",
    "ModelLayout",
    "ModelSummary",
    "ResolutionError",
    "SummaryRow",
    "freeze",
    "layerwise_param_groups",
    "load_pretrained",
    "resolve_layout",
    "summary",
]
