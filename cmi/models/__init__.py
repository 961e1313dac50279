"""The study's recommenders by name, and a builder that checks hyperparameters.

Every model takes keyword hyperparameters `n_items, dim, max_len, n_interests, temperature`
(single-interest models accept and ignore `n_interests`) plus its own; see each module.
"""

from __future__ import annotations

import inspect

import numpy as np

from cmi.models.base import Recommender
from cmi.models.cmi import CMI
from cmi.models.comirec_dr import ComiRecDR
from cmi.models.comirec_sa import ComiRecSA
from cmi.models.gru4rec import GRU4Rec
from cmi.models.mind import MIND
from cmi.models.pop import Pop
from cmi.models.sasrec import SASRec
from cmi.models.youtube_dnn import YouTubeDNN

MODELS: dict[str, type[Recommender]] = {
    "cmi": CMI,
    "pop": Pop,
    "youtube_dnn": YouTubeDNN,
    "gru4rec": GRU4Rec,
    "sasrec": SASRec,
    "mind": MIND,
    "comirec_dr": ComiRecDR,
    "comirec_sa": ComiRecSA,
}


def model_hyperparameters(name: str) -> dict[str, object]:
    """The hyperparameters model `name` accepts, with their defaults (`n_items` and Pop's
    `item_popularity` are supplied by `build_model` and left out)."""
    model_class = _model_class(name)
    parameters = inspect.signature(model_class.__init__).parameters
    return {
        key: parameter.default
        for key, parameter in parameters.items()
        if key not in ("self", "n_items", "item_popularity")
    }


def build_model(
    name: str, n_items: int, item_popularity: np.ndarray | None = None, **hyperparameters
) -> Recommender:
    """Instantiate model `name` for a catalogue of `n_items` items (ids 1..N).

    `item_popularity` ((N + 1,) training counts) is required by "pop" and ignored by the
    others. An unknown hyperparameter raises ValueError naming the model and what it accepts.
    """
    model_class = _model_class(name)
    accepted = model_hyperparameters(name)
    unknown = sorted(set(hyperparameters) - set(accepted))
    if unknown:
        raise ValueError(
            f"model {name!r} does not take hyperparameters {unknown}; it takes {sorted(accepted)}"
        )
    if model_class is Pop:
        if item_popularity is None:
            raise ValueError("model 'pop' needs item_popularity, an (N + 1,) array of counts")
        return Pop(n_items=n_items, item_popularity=item_popularity, **hyperparameters)
    return model_class(n_items=n_items, **hyperparameters)


def _model_class(name: str) -> type[Recommender]:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; expected one of {sorted(MODELS)}")
    return MODELS[name]


__all__ = ["MODELS", "Recommender", "build_model", "model_hyperparameters"]
