"""rcedetect: robust detection of adversarial examples (Pang, Du, Dong, Zhu, NeurIPS 2018).

Train with reverse cross-entropy, predict with the reversed logits, detect with K-density / non-ME /
confidence, and attack with FGSM, BIM, ILCM, JSMA and the C&W family; ``rcedetect.wrap(model, head="fc")`` puts
any image classifier behind the same interface.
"""

from .classifier import Classifier
from .errors import (
    CheckpointError,
    ConfigError,
    DataError,
    InputError,
    NotFittedError,
    RceError,
    TrainingError,
)
from .io import package_version
from .wrapping import wrap

__version__ = package_version()

__all__ = [
    "CheckpointError",
    "Classifier",
    "ConfigError",
    "DataError",
    "InputError",
    "NotFittedError",
    "RceError",
    "TrainingError",
    "__version__",
    "wrap",
]
