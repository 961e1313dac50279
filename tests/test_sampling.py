"""Tests of the training sampler against the users' sequences, computed back from each batch."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from cmi.ragged import Ragged
from cmi.sampling import TrainSampler

MAX_LEN = 12


def distinct_item_world(n_users: int = 60, seed: int = 0) -> SimpleNamespace:
    """Users whose items are all different (user u's t-th item is 1 + 1000 u + t), so an item
    tells which position of which sequence it came from."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 40, size=n_users)
    lengths[:5] = [1, 2, 3, 4, 5]  # the first three are too short to sample
    rows = [[1 + 1000 * u + t for t in range(n)] for u, n in enumerate(lengths)]
    return SimpleNamespace(train_history=Ragged.from_lists(rows), n_items=1000 * n_users)


def real_rows(array: torch.Tensor) -> list[list[int]]:
    return [[int(v) for v in row if v != 0] for row in array]


def test_history_positive_and_cut_follow_the_spec():
    world = distinct_item_world()
    sampler = TrainSampler(world, batch_size=16, max_len=MAX_LEN, min_cut=6, seed=3)
    lengths = world.train_history.lengths
    for _ in range(20):
        users = sampler.next_users()
        batch = sampler.batch_for(users)
        assert batch.history.dtype == torch.int64
        assert batch.history.shape[0] == len(users) == batch.positive.shape[0]
        assert batch.negative.shape == (len(users),)
        for row, user in enumerate(users):
            n = lengths[user]
            assert n >= 4
            history = batch.history[row].tolist()
            real = [v for v in history if v != 0]
            # Left-aligned: the real items come first, then only padding.
            assert history[: len(real)] == real and set(history[len(real) :]) <= {0}
            positions = [(v - 1) - 1000 * user for v in real]
            cut = positions[-1] + 1
            assert positions == list(range(cut - len(real), cut))  # contiguous, time order
            assert min(6, n - 1) <= cut < n
            assert len(real) == min(cut, MAX_LEN)
            positive_position = int(batch.positive[row]) - 1 - 1000 * user
            assert cut <= positive_position < n


def test_cut_points_cover_their_whole_range():
    # One user with 9 items: c is uniform over {6, 7, 8}, the positive over [c, 9).
    world = SimpleNamespace(train_history=Ragged.from_lists([list(range(1, 10))]), n_items=9)
    sampler = TrainSampler(world, batch_size=1, max_len=MAX_LEN, seed=0)
    cuts, positives = [], []
    for _ in range(600):
        batch = sampler.next_batch()
        cuts.append(int((batch.history != 0).sum()))
        positives.append(int(batch.positive[0]))
    counts = np.bincount(cuts, minlength=9)[6:]
    assert counts.sum() == 600 and (counts > 150).all()
    # P(positive = item 9, at position 8) = (1/3)(1/3 + 1/2 + 1) = 11/18.
    assert abs(np.mean(np.array(positives) == 9) - 11 / 18) < 0.07


def test_negatives_avoid_the_history_even_in_a_tiny_catalogue():
    rng = np.random.default_rng(1)
    rows = [list(rng.integers(1, 13, size=rng.integers(4, 12))) for _ in range(50)]
    world = SimpleNamespace(train_history=Ragged.from_lists(rows), n_items=12)
    sampler = TrainSampler(world, batch_size=50, max_len=MAX_LEN, seed=2)
    for _ in range(10):
        batch = sampler.next_batch()
        negatives = batch.negative.numpy()
        assert ((negatives >= 1) & (negatives <= 12)).all()
        assert not (batch.history.numpy() == negatives[:, None]).any()


def test_exact_negative_draw_is_uniform_over_the_items_outside_the_history():
    # The history holds 10 of 12 items: only 4 and 9 are left, each with probability 1/2.
    history = [1, 2, 3, 5, 6, 7, 8, 10, 11, 12, 3, 7]
    world = SimpleNamespace(train_history=Ragged.from_lists([history]), n_items=12)
    sampler = TrainSampler(world, batch_size=1, max_len=MAX_LEN, seed=0)
    drawn = sampler._outside(np.array([history] * 4000))
    assert set(drawn.tolist()) == {4, 9}
    assert abs(np.mean(drawn == 4) - 0.5) < 0.05


def test_views_are_disjoint_ordered_halves_or_the_whole_short_history():
    world = distinct_item_world(n_users=80, seed=4)
    sampler = TrainSampler(world, batch_size=40, max_len=MAX_LEN, needs_views=True, seed=5)
    seen_short = seen_long = 0
    for _ in range(10):
        batch = sampler.next_batch()
        assert batch.view_a.shape == batch.view_b.shape
        for history, view_a, view_b in zip(
            real_rows(batch.history), real_rows(batch.view_a), real_rows(batch.view_b)
        ):
            for view in (view_a, view_b):
                assert view == sorted(view)  # items grow with time, so time order
            if len(history) <= 6:
                seen_short += 1
                assert view_a == history and view_b == history
            else:
                seen_long += 1
                assert not set(view_a) & set(view_b)
                assert sorted(view_a + view_b) == history
                assert len(view_a) == len(history) // 2
        for padded in (batch.view_a, batch.view_b):
            counts = (padded != 0).sum(dim=1)
            columns = torch.arange(padded.shape[1])
            assert torch.equal(padded != 0, columns[None, :] < counts[:, None])  # left-aligned
    assert seen_short > 0 and seen_long > 0


def test_views_split_differently_from_draw_to_draw():
    world = SimpleNamespace(train_history=Ragged.from_lists([list(range(1, 31))]), n_items=30)
    sampler = TrainSampler(world, batch_size=1, max_len=MAX_LEN, needs_views=True, seed=0)
    splits = {tuple(real_rows(sampler.next_batch().view_a)[0]) for _ in range(30)}
    assert len(splits) > 20


def test_epochs_visit_every_eligible_user_once_without_repeats_in_a_batch():
    world = distinct_item_world(n_users=23, seed=6)
    eligible = np.flatnonzero(world.train_history.lengths >= 4)
    sampler = TrainSampler(world, batch_size=6, max_len=MAX_LEN, seed=7)
    batches = [sampler.next_users() for _ in range(12)]
    for users in batches:
        assert len(users) == 6 and len(set(users.tolist())) == 6
    stream = np.concatenate(batches)
    for epoch in range(3):
        chunk = stream[epoch * len(eligible) : (epoch + 1) * len(eligible)]
        if len(chunk) == len(eligible):
            assert sorted(chunk.tolist()) == eligible.tolist()
    assert not np.isin(np.flatnonzero(world.train_history.lengths < 4), stream).any()


def test_state_dict_restores_the_exact_stream():
    world = distinct_item_world(n_users=30, seed=8)
    sampler = TrainSampler(world, batch_size=7, max_len=MAX_LEN, needs_views=True, seed=9)
    for _ in range(5):  # past an epoch boundary
        sampler.next_batch()
    state = sampler.state_dict()
    expected = [sampler.next_batch() for _ in range(6)]

    other = TrainSampler(world, batch_size=7, max_len=MAX_LEN, needs_views=True, seed=123)
    other.load_state_dict(state)
    for want, got in zip(expected, (other.next_batch() for _ in range(6))):
        for name in ("history", "positive", "negative", "view_a", "view_b"):
            assert torch.equal(getattr(want, name), getattr(got, name))


def test_same_seed_same_batches_other_seed_other_batches():
    world = distinct_item_world(seed=10)
    first = TrainSampler(world, 8, MAX_LEN, seed=1).next_batch()
    again = TrainSampler(world, 8, MAX_LEN, seed=1).next_batch()
    other = TrainSampler(world, 8, MAX_LEN, seed=2).next_batch()
    assert torch.equal(first.history, again.history)
    assert not torch.equal(first.positive, other.positive)


def test_data_parallel_shards_are_disjoint_and_cover_an_epoch():
    world = distinct_item_world(n_users=41, seed=11)
    eligible = set(np.flatnonzero(world.train_history.lengths >= 4).tolist())
    samplers = [TrainSampler(world, 4, MAX_LEN, seed=5, rank=r, world_size=2) for r in (0, 1)]
    shard = samplers[0].shard_size
    assert shard == len(eligible) // 2
    steps = shard // 4
    drawn = [np.concatenate([s.next_users() for _ in range(steps)]) for s in samplers]
    assert not set(drawn[0].tolist()) & set(drawn[1].tolist())
    assert set(drawn[0].tolist()) | set(drawn[1].tolist()) <= eligible
    # Different processes draw different cut points for their own users.
    batches = [s.next_batch() for s in samplers]
    assert not torch.equal(batches[0].history, batches[1].history)


def test_bad_arguments_are_named():
    world = distinct_item_world(n_users=6)
    with pytest.raises(ValueError, match="rank 2 is outside world size 2"):
        TrainSampler(world, 4, MAX_LEN, rank=2, world_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        TrainSampler(world, 0, MAX_LEN)
    short = SimpleNamespace(train_history=Ragged.from_lists([[1, 2], [3]]), n_items=3)
    with pytest.raises(ValueError, match="no users to sample"):
        TrainSampler(short, 4, MAX_LEN)
