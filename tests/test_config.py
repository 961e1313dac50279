"""Tests of TrainConfig: defaults from the spec, parsing, checks with clear messages, hashing."""

from __future__ import annotations

import json

import pytest

from cmi.config import TrainConfig
from cmi.models import MODELS


def test_defaults_are_the_spec_values():
    config = TrainConfig()
    assert (config.model, config.dim, config.n_interests, config.max_len) == ("cmi", 64, 8, 100)
    assert (config.tau_route, config.tau_cl) == (0.1, 0.1)
    assert (config.lambda_cl, config.lambda_orth, config.lambda_uni) == (0.05, 10.0, 1.0)
    assert (config.lr, config.weight_decay, config.batch_size) == (1e-3, 1e-4, 1024)
    assert (config.patience, config.min_cut, config.general_interest) == (10, 6, True)
    assert config.temperature is None  # the model's own: 0.1 for CMI, 1.0 for baselines
    assert config.device == "auto" and config.amp is False


def test_from_dict_round_trip_through_json():
    config = TrainConfig(model="sasrec", n_layers=3, dropout=0.3, temperature=0.5, seed=7)
    again = TrainConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    assert again.config_hash() == config.config_hash()


def test_strings_are_parsed_by_field_type():
    config = TrainConfig.from_overrides(
        ["lr=0.01", "n_interests=4", "general_interest=false", "temperature=none", "amp=1"]
    )
    assert config.lr == 0.01 and config.n_interests == 4
    assert config.general_interest is False and config.temperature is None and config.amp
    assert TrainConfig.from_dict({"lambda_orth": 3}).lambda_orth == 3.0  # int for a float


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"n_interst": 4}, r"unknown TrainConfig key\(s\) \['n_interst'\]"),
        ({"n_interests": "four"}, r"TrainConfig.n_interests='four'.*expected int"),
        ({"n_interests": 2.5}, r"TrainConfig.n_interests=2.5.*expected int"),
        ({"general_interest": "maybe"}, r"general_interest='maybe'.*expected bool"),
        ({"n_interests": 0}, r"TrainConfig.n_interests=0 is invalid; expected an integer >= 1"),
        ({"lambda_cl": -0.1}, r"TrainConfig.lambda_cl=-0.1 is invalid; expected a number >= 0"),
        ({"lambda_orth": -1}, r"TrainConfig.lambda_orth=-1.0 is invalid"),
        ({"lambda_uni": -2.0}, r"TrainConfig.lambda_uni=-2.0 is invalid"),
        ({"temperature": 0}, r"TrainConfig.temperature=0.0 is invalid; expected a number > 0"),
        ({"tau_cl": -1.0}, r"TrainConfig.tau_cl=-1.0 is invalid"),
        ({"lr": 0.0}, r"TrainConfig.lr=0.0 is invalid; expected a number > 0"),
        ({"model": "bert4rec"}, r"TrainConfig.model='bert4rec' is invalid; expected one of"),
        ({"device": "tpu"}, r"TrainConfig.device='tpu' is invalid; expected 'auto', 'cpu'"),
        ({"target_variant": "all"}, r"TrainConfig.target_variant='all' is invalid"),
        ({"dropout": 1.0}, r"TrainConfig.dropout=1.0 is invalid"),
    ],
)
def test_bad_values_name_the_key_the_value_and_what_was_expected(values, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig.from_dict(values)


def test_direct_construction_is_checked_too():
    with pytest.raises(ValueError, match="TrainConfig.batch_size=0"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="override 'lr' is not of the form key=value"):
        TrainConfig.from_overrides(["lr"])


def test_every_registered_model_and_device_form_is_accepted():
    for name in MODELS:
        assert TrainConfig(model=name).model == name
    for device in ("auto", "cpu", "cuda", "cuda:1"):
        assert TrainConfig(device=device).device == device


def test_hash_follows_result_fields_only():
    base = TrainConfig()
    same = base.replace(progress=False, device="cpu", run_root="elsewhere", dataset="x/y")
    assert same.config_hash() == base.config_hash()
    for change in ({"seed": 1}, {"lambda_cl": 0.0}, {"amp": True}, {"temperature": 0.2}):
        assert base.replace(**change).config_hash() != base.config_hash(), change
    assert base.config_hash("data-a") != base.config_hash("data-b")
    assert len(base.config_hash()) == 12
