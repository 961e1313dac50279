"""Tests of the models: CMI's routing and interests, scoring, the loss terms, training steps.

Tiny random data on CPU; every quantity is checked against a second computation.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import cmi.models.cmi as cmi_module
from cmi.batch import TrainBatch
from cmi.layers import gather_last, last_gru_state, masked_mean, squash
from cmi.losses import contrastive_interest_loss, sampled_softmax
from cmi.models import MODELS, build_model

N_ITEMS = 40
DIM = 16
MAX_LEN = 12
POPULARITY = np.arange(N_ITEMS + 1, dtype=np.float64)
POPULARITY[0] = 0.0


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors gain nothing from threads, and the machine's cores are shared."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def small_model(name: str, **hyperparameters):
    torch.manual_seed(0)
    settings = {"dim": DIM, "max_len": MAX_LEN, **hyperparameters}
    return build_model(name, N_ITEMS, POPULARITY, **settings)


def make_batch(n_users: int = 8, seed: int = 0) -> TrainBatch:
    """Left-aligned random histories of 3..MAX_LEN items; views split them in two halves kept
    in time order (histories of <= 6 items whole in both)."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, MAX_LEN + 1, (n_users,), generator=generator)
    lengths[0], lengths[1] = 3, MAX_LEN
    history = torch.zeros(n_users, MAX_LEN, dtype=torch.long)
    view_a = torch.zeros_like(history)
    view_b = torch.zeros_like(history)
    for user, length in enumerate(lengths.tolist()):
        items = torch.randint(1, N_ITEMS + 1, (length,), generator=generator)
        history[user, :length] = items
        if length <= 6:
            view_a[user, :length] = items
            view_b[user, :length] = items
            continue
        order = torch.randperm(length, generator=generator)
        first, second = order[: length // 2].sort().values, order[length // 2 :].sort().values
        view_a[user, : len(first)] = items[first]
        view_b[user, : len(second)] = items[second]
    positive = torch.randint(1, N_ITEMS + 1, (n_users,), generator=generator)
    negative = torch.randint(1, N_ITEMS + 1, (n_users,), generator=generator)
    negative[0] = positive[1]  # an accidental hit for row 1
    return TrainBatch(history, positive, negative, view_a, view_b)


# --- layers ------------------------------------------------------------------------------


def test_gather_last_and_masked_mean_by_hand():
    states = torch.arange(2 * 3 * 2, dtype=torch.float32).reshape(2, 3, 2)
    lengths = torch.tensor([2, 0])
    assert torch.equal(gather_last(states, lengths), torch.tensor([[2.0, 3.0], [0.0, 0.0]]))
    mask = torch.tensor([[True, True, False], [False, False, False]])
    assert torch.equal(masked_mean(states, mask), torch.tensor([[1.0, 2.0], [0.0, 0.0]]))


def test_squash_keeps_direction_and_maps_norm():
    vectors = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    squashed = squash(vectors)
    assert torch.allclose(squashed[0], torch.tensor([0.6, 0.8]) * 25.0 / 26.0)
    assert torch.equal(squashed[1], torch.zeros(2))


def test_gru_reads_real_items_only():
    torch.manual_seed(3)
    gru = torch.nn.GRU(4, 5, bias=False, batch_first=True)
    inputs = torch.randn(3, 6, 4)
    lengths = torch.tensor([6, 2, 4])
    state = last_gru_state(gru, inputs, lengths)
    for row, length in enumerate(lengths.tolist()):
        _, alone = gru(inputs[row : row + 1, :length])  # the row without any padding
        assert torch.allclose(state[row], alone[0, 0], atol=1e-6)
    assert torch.equal(last_gru_state(gru, inputs, torch.tensor([0, 1, 1]))[0], torch.zeros(5))


# --- CMI -----------------------------------------------------------------------------------


def test_routing_rows_sum_to_one_on_real_positions_and_zero_on_padding():
    model = small_model("cmi", n_interests=4)
    history = make_batch().history
    routing = model.routing(history)
    assert routing.shape == (history.shape[0], MAX_LEN, 4)
    row_sums = routing.sum(dim=-1)
    real = history != 0
    assert torch.allclose(row_sums[real], torch.ones(int(real.sum())), atol=1e-6)
    assert torch.equal(row_sums[~real], torch.zeros(int((~real).sum())))
    # p[t, k] = softmax_k(e . g / tau_route), recomputed for one position.
    item = F.normalize(model.item_embedding.weight[history[0, 0]], dim=0)
    expected = (model.category_vectors() @ item / 0.1).softmax(dim=0)
    assert torch.allclose(routing[0, 0], expected, atol=1e-6)


def test_category_interests_are_routing_weighted_means():
    model = small_model("cmi", n_interests=3)
    history = make_batch().history[:2]
    encoding = model.encode(history)
    items = F.normalize(model.item_embedding.weight[history], dim=-1)  # (B, L, d)
    for k in range(3):
        pooled = (encoding.routing[1, :, k, None] * items[1]).sum(dim=0)
        assert torch.allclose(encoding.category_interests[1, k], F.normalize(pooled, dim=0))
    general = encoding.general_interest
    expected = F.normalize(encoding.category_interests + general[:, None], dim=-1)
    assert torch.allclose(encoding.interests, expected)


def test_empty_history_falls_back_to_categories():
    history = torch.zeros(2, MAX_LEN, dtype=torch.long)
    history[1, :3] = torch.tensor([4, 5, 6])
    model = small_model("cmi", n_interests=4)
    encoding = model.encode(history)
    assert torch.allclose(encoding.category_interests[0], model.category_vectors())
    # The GRU's state before any item is zero, so h = normalize(ReLU(bias)).
    bias_direction = F.normalize(F.relu(model.general_projection.bias), dim=0)
    assert torch.allclose(encoding.general_interest[0], bias_direction, atol=1e-6)
    without_general = small_model("cmi", n_interests=4, general_interest=False)
    interests = without_general.interests(history)
    assert torch.allclose(interests[0], without_general.category_vectors())


@pytest.mark.parametrize("settings", [{}, {"general_interest": False}, {"n_interests": 1}])
def test_cmi_vectors_are_unit(settings):
    model = small_model("cmi", **settings)
    interests = model.interests(make_batch().history)
    assert torch.allclose(interests.norm(dim=-1), torch.ones(interests.shape[:2]), atol=1e-5)
    items = model.item_vectors()
    assert torch.allclose(items[1:].norm(dim=-1), torch.ones(N_ITEMS), atol=1e-5)
    assert torch.equal(items[0], torch.zeros(DIM))


def test_category_table_starts_orthonormal():
    model = small_model("cmi", n_interests=8)
    gram = model.categories @ model.categories.T
    assert torch.allclose(gram, torch.eye(8), atol=1e-5)


def test_cmi_loss_terms_match_separate_computation():
    model = small_model("cmi", n_interests=4)
    batch = make_batch()
    terms = model.loss_terms(batch)
    assert set(terms) == {"rec", "cl", "orth", "uni"}
    interests_a = model.interests(batch.view_a)  # each view trimmed on its own
    interests_b = model.interests(batch.view_b)
    rec = sampled_softmax(
        torch.cat([interests_a, interests_b]),
        model.item_vectors(),
        batch.positive.repeat(2),
        batch.negative,
        0.1,
        "max",
    )
    assert torch.allclose(terms["rec"], rec, atol=1e-5)
    cl = contrastive_interest_loss(interests_a, interests_b, 0.1)
    assert torch.allclose(terms["cl"], cl, atol=1e-5)
    expected_total = terms["rec"] + 0.05 * terms["cl"] + 10 * terms["orth"] + terms["uni"]
    assert torch.allclose(model.total_loss(terms), expected_total)


@pytest.mark.parametrize(
    ("weight", "term", "function"),
    [
        ("lambda_cl", "cl", "contrastive_interest_loss"),
        ("lambda_orth", "orth", "orthogonality_loss"),
        ("lambda_uni", "uni", "balance_loss"),
    ],
)
def test_zero_weight_term_is_not_computed(monkeypatch, weight, term, function):
    def fail(*args, **kwargs):
        raise AssertionError(f"{function} was called although {weight} = 0")

    monkeypatch.setattr(cmi_module, function, fail)
    model = small_model("cmi", **{weight: 0.0})
    terms = model.loss_terms(make_batch())
    assert term not in terms and "rec" in terms
    assert torch.isfinite(model.total_loss(terms))


def test_cmi_needs_views():
    batch = make_batch()
    batch.view_a = None
    with pytest.raises(ValueError, match="view_a"):
        small_model("cmi").loss_terms(batch)


# --- every model ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(MODELS))
def test_shapes_and_score_is_max_over_interests(name):
    model = small_model(name).eval()
    history = make_batch().history
    with torch.no_grad():
        interests = model.interests(history)
        items = model.item_vectors()
        scores = model.score(history)
    k = model.n_interests
    width = 1 if name == "pop" else DIM
    assert interests.shape == (8, k, width)
    assert items.shape == (N_ITEMS + 1, width)
    assert scores.shape == (8, N_ITEMS + 1)
    per_interest = torch.stack([interests[:, i] @ items.T for i in range(k)])  # (K, B, N+1)
    assert torch.allclose(scores, per_interest.max(dim=0).values, atol=1e-6)
    # Extra padding columns change nothing.
    padded = torch.cat([history[:, :-2], torch.zeros(8, 2, dtype=torch.long)], dim=1)
    with torch.no_grad():
        assert torch.allclose(model.score(padded), model.score(padded[:, : MAX_LEN - 2]))


def test_pop_scores_popularity_and_has_nothing_to_train():
    model = small_model("pop")
    assert not model.trainable and not list(model.parameters())
    scores = model.score(make_batch().history)
    assert torch.equal(scores, torch.tensor(POPULARITY, dtype=torch.float32).expand(8, -1))
    loss = model.total_loss(model.loss_terms(make_batch()))
    assert float(loss) == 0.0 and not loss.requires_grad


TRAINABLE = [(name, {}) for name in sorted(MODELS) if name != "pop"] + [
    ("cmi", {"n_interests": 1}),
    ("cmi", {"general_interest": False}),
]


@pytest.mark.parametrize(("name", "settings"), TRAINABLE)
def test_training_steps_reduce_the_loss(name, settings):
    model = small_model(name, **settings)
    assert model.trainable
    batch = make_batch()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)

    def evaluation_loss() -> float:
        model.eval()
        with torch.no_grad():
            value = float(model.total_loss(model.loss_terms(batch)))
        model.train()
        return value

    before = evaluation_loss()
    for _ in range(30):
        optimiser.zero_grad()
        loss = model.total_loss(model.loss_terms(batch))
        loss.backward()
        optimiser.step()
    after = evaluation_loss()
    assert np.isfinite(before) and after < 0.8 * before


def test_mind_label_aware_attention_with_power_zero_is_the_mean_interest():
    model = small_model("mind", pow_p=0)
    batch = make_batch()
    mean_interest = model.interests(batch.history).mean(dim=1, keepdim=True)  # (B, 1, d)
    expected = sampled_softmax(
        mean_interest, model.item_vectors(), batch.positive, batch.negative, 1.0, "max"
    )
    assert torch.allclose(model.loss_terms(batch)["rec"], expected, atol=1e-6)


def test_multi_interest_baselines_train_the_target_interest():
    for name in ("comirec_dr", "comirec_sa"):
        model = small_model(name)
        batch = make_batch()
        expected = sampled_softmax(
            model.interests(batch.history),
            model.item_vectors(),
            batch.positive,
            batch.negative,
            1.0,
            "target",
        )
        assert torch.allclose(model.loss_terms(batch)["rec"], expected)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="unknown model"):
        build_model("bpr", N_ITEMS, POPULARITY)
    with pytest.raises(ValueError, match="tau_cl"):
        build_model("sasrec", N_ITEMS, POPULARITY, tau_cl=0.1)
    with pytest.raises(ValueError, match="item_popularity"):
        build_model("pop", N_ITEMS, None)
    with pytest.raises(ValueError, match="max_len"):
        small_model("sasrec").score(torch.ones(2, MAX_LEN + 1, dtype=torch.long))


def test_sasrec_attention_is_causal():
    from cmi.models.sasrec import CausalSelfAttention

    torch.manual_seed(4)
    attention = CausalSelfAttention(8, n_heads=2, dropout=0.0).eval()
    states = torch.randn(2, 5, 8)
    changed = states.clone()
    changed[:, 3:] = torch.randn(2, 2, 8)  # later positions only
    with torch.no_grad():
        before, after = attention(states), attention(changed)
    assert torch.allclose(before[:, :3], after[:, :3], atol=1e-6)
    assert not torch.allclose(before[:, 3:], after[:, 3:])


@pytest.mark.parametrize("name", ["cmi", "mind", "comirec_dr", "comirec_sa"])
@pytest.mark.parametrize("bad", [0, -2, 1.5])
def test_multi_interest_models_reject_a_bad_number_of_interests(name, bad):
    with pytest.raises(ValueError, match=rf"n_interests must be a positive integer, got {bad}"):
        build_model(name, n_items=10, n_interests=bad)


@pytest.mark.parametrize("name", ["youtube_dnn", "gru4rec", "sasrec"])
def test_single_interest_models_have_one_interest_whatever_is_asked(name):
    assert build_model(name, n_items=10, n_interests=4).n_interests == 1
