"""Training a codec model's filters on what its decoder really outputs: the post-filter,
or (``FilterTrainOptions.detail``) the detail filter that runs after the detail layer.
One training loop (``train``); the two differ only in the pool of decodes it learns
from, the held-out decodes it measures, and the slot of the model the result takes
(``attach``).

1. Pools, built in chunks in the work folder, so that an interrupted build resumes:
   - post-filter (``DecodedCrops``): random training crops encoded at every rung of the
     model's ladder (with the rate-aware choice and table set the encoder uses), stored as
     8-bit decodes beside the target, with the decode's refined-cell flags (the filter's
     side inputs). One walk per distinct (λ, table set) yields every layer count of it.
     To distill, the targets are the model's own post-filter's output instead of the photo.
   - detail filter (``DetailDecodes``): the training photos, whole, walked as the ladder's
     detail rungs walk them (with the post-filter where the encoder takes it), then the
     detail layer at DETAIL_POOL_STEPS random steps each, log-uniform in DETAIL_STEP_RANGE;
     the filter reads which 8×8 blocks that layer coded and the step.
2. Training: MSE between filter(decoded) and the target on random 32-px-aligned windows
   (aligned, so the cell and block grids sit where they do in a real decode), mirrored
   half the time, Adam with a cosine schedule; resumable checkpoints and a JSONL log with
   the validation gain per rung (per detail step) on held-out photos. ``--init`` starts
   from an earlier filter, widened to side inputs or more blocks it did not have
   (``PostFilter.widen_from``).

One module per job, imported one way (each only from those above it):

- ``pools``: what every pool gives the loop (``Windows``, the ``Pool`` protocol)
- ``crops``: the post-filter's pool, crops decoded at every rung (``degrade``)
- ``details``: the detail filter's pool, photos decoded with the detail layer
- ``loop``: ``train`` on a pool, and ``attach`` the result to the model
"""

from __future__ import annotations

from ddncodec.filtertrain.crops import degrade
from ddncodec.filtertrain.loop import attach, train

__all__ = ["attach", "degrade", "train"]
