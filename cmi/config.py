"""The training configuration: one typed dataclass holding every hyperparameter of a run.

Defaults follow the paper (the paper, and the authors' code where the paper is
silent). `TrainConfig.from_dict` and `TrainConfig.from_overrides` check names, types and ranges,
so a typo in a notebook's parameters cell fails at once with a message naming the key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

# Fields that change where or how visibly a run executes, not its numbers.
NON_RESULT_FIELDS = frozenset({"dataset", "device", "progress", "run_root", "eval_batch_users"})
TARGET_VARIANTS = ("distinct", "authors")
_DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


@dataclass
class TrainConfig:
    """Everything that defines one training run; each field's comment gives its meaning."""

    # --- what to train on what ---
    model: str = "cmi"  # a name in cmi.models.MODELS: cmi, pop, youtube_dnn, gru4rec, sasrec, ...
    dataset: str = "data/synthetic"  # path to a prepared dataset folder (data_prep output)

    # --- model shape (the paper's model) ---
    dim: int = 64  # embedding size d
    n_interests: int = 8  # K: implicit categories / interests (multi-interest models only)
    max_len: int = 100  # L: the most recent L history items feed the model
    temperature: float | None = None  # softmax temperature tau; None: the model's own default
    # (0.1 for CMI, 1.0 for the baselines)
    tau_route: float = 0.1  # temperature of CMI's routing softmax over categories
    tau_cl: float = 0.1  # temperature tau_c of the contrastive multi-interest loss
    general_interest: bool = True  # CMI: add the GRU general interest h to every interest

    # --- loss weights (the paper's losses) ---
    lambda_cl: float = 0.05  # weight of the contrastive loss (the authors' script uses 0.01)
    lambda_orth: float = 10.0  # weight of the category orthogonality loss
    lambda_uni: float = 1.0  # weight of the balanced-routing loss

    # --- baseline knobs; None: the model's own default ---
    n_layers: int | None = None  # SASRec: transformer blocks; GRU4Rec: GRU layers
    n_heads: int | None = None  # SASRec: attention heads
    dropout: float | None = None  # dropout rate of the baselines that have one
    routing_iterations: int | None = None  # MIND / ComiRec-DR: capsule routing iterations

    # --- optimisation ---
    lr: float = 1e-3  # Adam learning rate
    weight_decay: float = 1e-4  # Adam weight decay (L2 added to the gradient)
    batch_size: int = 1024  # users per step, over all processes together
    max_steps: int = 5000  # hard cap on optimiser steps
    eval_every: int = 100  # steps between two validation evaluations
    patience: int = 10  # evaluations without a better validation Recall@50 before stopping
    min_cut: int = 6  # the cut point is drawn from [min(min_cut, n - 1), n)
    seed: int = 0  # seeds torch, the sampler and everything random in the run

    # --- evaluation ---
    target_variant: str = "distinct"  # "distinct" (the study's targets) or "authors"
    eval_batch_users: int = 512  # users scored per evaluation batch (memory, not results)

    # --- execution ---
    device: str = "auto"  # "auto" (cuda when available, else cpu), "cpu", "cuda", "cuda:N"
    amp: bool = False  # bfloat16 autocast; CUDA only (ignored with a warning on CPU)
    progress: bool = True  # show a tqdm bar
    run_root: str = "runs"  # runs live in <run_root>/<dataset name>/<model>/<config hash>/

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        """A config from a mapping of field names to values; strings are parsed by field type."""
        if isinstance(values, TrainConfig):
            return dataclasses.replace(values)
        if not isinstance(values, Mapping):
            raise ValueError(f"TrainConfig.from_dict expects a mapping, got {type(values)}")
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(
                f"unknown TrainConfig key(s) {unknown}; expected some of {sorted(known)}"
            )
        hints = _field_types()
        coerced = {name: _coerce(name, value, hints[name]) for name, value in values.items()}
        return cls(**coerced)

    @classmethod
    def from_overrides(
        cls, overrides: Iterable[str], base: TrainConfig | Mapping[str, Any] | None = None
    ) -> TrainConfig:
        """Apply `key=value` strings (the CLI's `--set`) on top of `base` (defaults if None)."""
        values = {} if base is None else dict(_as_dict(base))
        for item in overrides:
            key, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"override {item!r} is not of the form key=value")
            values[key.strip().replace("-", "_")] = value.strip()
        return cls.from_dict(values)

    def replace(self, **changes: Any) -> TrainConfig:
        """A validated copy with some fields changed."""
        return TrainConfig.from_dict({**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    # ------------------------------------------------------------------ identity

    def result_fields(self) -> dict[str, Any]:
        """The fields that can change a run's numbers (everything but where/how it runs)."""
        return {k: v for k, v in self.to_dict().items() if k not in NON_RESULT_FIELDS}

    def config_hash(self, salt: str = "") -> str:
        """A short stable hash of `result_fields()` (plus `salt`, e.g. a data fingerprint)."""
        payload = json.dumps(self.result_fields(), sort_keys=True) + "\n" + salt
        return hashlib.sha256(payload.encode()).hexdigest()[:12]

    # ------------------------------------------------------------------ checks

    def validate(self) -> None:
        """Raise ValueError naming the first field whose type or value is not allowed."""
        hints = _field_types()
        for f in fields(self):
            value = getattr(self, f.name)
            if not _matches(value, hints[f.name]):
                raise ValueError(
                    f"TrainConfig.{f.name}={value!r} has type {type(value).__name__}; "
                    f"expected {_type_name(hints[f.name])}"
                )
        at_least_one = ("dim", "n_interests", "max_len", "batch_size", "eval_every", "patience")
        for name in at_least_one + ("min_cut", "eval_batch_users"):
            _check(self, name, getattr(self, name) >= 1, "an integer >= 1")
        _check(self, "max_steps", self.max_steps >= 0, "an integer >= 0")
        for name in ("n_layers", "n_heads", "routing_iterations"):
            value = getattr(self, name)
            _check(self, name, value is None or value >= 1, "None or an integer >= 1")
        for name in ("temperature", "tau_route", "tau_cl"):
            value = getattr(self, name)
            allowed = value is None if name == "temperature" else False
            _check(self, name, allowed or value > 0, "a number > 0")
        for name in ("lambda_cl", "lambda_orth", "lambda_uni", "weight_decay"):
            _check(self, name, getattr(self, name) >= 0, "a number >= 0")
        _check(self, "lr", self.lr > 0, "a number > 0")
        _check(self, "dropout", self.dropout is None or 0 <= self.dropout < 1, "None or in [0, 1)")
        _check(self, "target_variant", self.target_variant in TARGET_VARIANTS, TARGET_VARIANTS)
        _check(
            self,
            "device",
            bool(_DEVICE_PATTERN.match(self.device)),
            "'auto', 'cpu', 'mps', 'cuda' or 'cuda:N'",
        )
        _check(self, "dataset", bool(self.dataset), "a path to a prepared dataset folder")
        models = known_models()
        _check(self, "model", self.model in models, f"one of {sorted(models)}")


def known_models() -> tuple[str, ...]:
    """Names registered in cmi.models.MODELS."""
    from cmi.models import MODELS  # imported late: models import torch, config should not

    return tuple(MODELS)


def _as_dict(base: TrainConfig | Mapping[str, Any]) -> Mapping[str, Any]:
    return base.to_dict() if isinstance(base, TrainConfig) else base


def _check(config: TrainConfig, name: str, ok: bool, expected: Any) -> None:
    if not ok:
        raise ValueError(
            f"TrainConfig.{name}={getattr(config, name)!r} is invalid; expected {expected}"
        )


def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(TrainConfig)


def _optional_inner(hint: Any) -> Any | None:
    """`int` for `int | None`, else None."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0] if len(args) == 1 else None
    return None


def _type_name(hint: Any) -> str:
    inner = _optional_inner(hint)
    return f"{inner.__name__} or None" if inner is not None else hint.__name__


def _matches(value: Any, hint: Any) -> bool:
    inner = _optional_inner(hint)
    if inner is not None:
        return value is None or _matches(value, inner)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, float)
    return isinstance(value, hint)


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """Convert strings (from a CLI or YAML) and ints for float fields; reject anything else."""
    inner = _optional_inner(hint)
    if inner is not None:
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null")):
            return None
        return _coerce(name, value, inner)
    expected = f"TrainConfig.{name}={value!r} has type {type(value).__name__}; expected"
    if isinstance(value, str) and hint is not str:
        text = value.strip()
        try:
            if hint is bool:
                lowered = text.lower()
                if lowered in ("true", "yes", "1", "on"):
                    return True
                if lowered in ("false", "no", "0", "off"):
                    return False
                raise ValueError(lowered)
            if hint is int:
                return int(text)
            if hint is float:
                return float(text)
        except ValueError:
            raise ValueError(f"{expected} {hint.__name__}") from None
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not _matches(value, hint):
        raise ValueError(f"{expected} {hint.__name__}")
    return value
