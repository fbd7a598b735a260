"""CLASS-net, the language/audio-queried separation network (paper §3.4, §4.1).

The only subpackage that imports torch; the pure array modules never import it, and
the pipeline imports it lazily.

- :class:`ClassNet`: FiLM-conditioned ResUNet magnitude-mask separator (16 kHz,
  STFT 1024 / hop 256), any input length.
- :func:`query_condition`: the condition from CLAP audio and text embeddings (eq. 17).
- :func:`separate_long`: chunked overlap-add inference for long recordings.
- :func:`freeze_encoder`: decoder-only fine-tuning.
- :func:`save_checkpoint`, :func:`load_checkpoint`: the project's checkpoint format;
  :func:`average_checkpoints`: the mean of one run's checkpoints (weight averaging).
- :func:`load_foreign_state`: LASS-net and CLASS-net-authors weights as initialisation.
- :mod:`.query`: the query interface (:class:`QueryEncoder`), the in-project
  :class:`LearnedQuery` (learned class embeddings and a small reference encoder, no
  downloads) and :class:`QueriedClassNet` (network and query in one checkpoint).
- :mod:`.clap`: LAION-CLAP queries loaded offline from files the user supplies
  (``ClapQuery``; optional extra ``studio-sep[clap]``, imported only when used).
- :mod:`.train`: resumable training on ``studio-sep augment`` data.
- :mod:`.audiosep`: AudioSep's separator (ResUNet30 + FiLM, 32 kHz); :mod:`.audiosep_checkpoint`
  loads it strictly from its released checkpoint (``audiosep_base_4M_steps.ckpt``) for the
  classnet prior.
"""

from studio_sep.classnet.checkpoint import (
    Checkpoint,
    ForeignLoad,
    average_checkpoints,
    load_checkpoint,
    load_foreign_state,
    save_checkpoint,
    weights_sha256,
)
from studio_sep.classnet.model import (
    ClassNet,
    Separation,
    chunk_weights,
    freeze_encoder,
    query_condition,
    separate_long,
)
from studio_sep.classnet.query import LearnedQuery, QueriedClassNet, QueryEncoder

__all__ = [
    "Checkpoint",
    "ClassNet",
    "ForeignLoad",
    "LearnedQuery",
    "QueriedClassNet",
    "QueryEncoder",
    "Separation",
    "average_checkpoints",
    "chunk_weights",
    "freeze_encoder",
    "load_checkpoint",
    "load_foreign_state",
    "query_condition",
    "save_checkpoint",
    "separate_long",
    "weights_sha256",
]
