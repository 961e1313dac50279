"""Full-ranking evaluation: every item is scored for every user, history items are excluded.

A model with K interests scores item v for a user as `max_k u_k . e_v` (CMI section 3.5 and
the multi-interest baselines' serving rule). Ranking by this maximum is the same as letting
each interest retrieve its own top list and merging the lists by score, so it is computed as
one matrix product and a top-k per block of users, optionally over blocks of items, or with an
exact faiss inner-product index.

Accuracy metrics (Recall, HitRate, NDCG at N) compare each user's top-N with that user's
targets for the day; beyond accuracy, category coverage and intra-list diversity describe the
spread of primary categories in the top-N. All are averaged over users with at least one
target. Hit tests are vectorised: (user, item) pairs become single int64 keys and membership is
a sorted search, so no Python loop runs over users.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd
import torch
from torch import nn

from cmi.ragged import Ragged

logger = logging.getLogger(__name__)

SPLITS = ("valid", "test")
TARGET_VARIANTS = ("distinct", "authors")
NO_ITEM = -1  # marks a top-k slot left empty because the user has fewer unmasked items than k


class EvaluationData(Protocol):
    """What `evaluate` reads from a `cmi.data.PreparedDataset`."""

    n_items: int
    max_history: int
    item_primary_category: np.ndarray  # (N + 1,) int, -1 unknown and at item 0

    def history(self, split: str) -> Ragged: ...

    def targets(self, split: str, variant: str = "distinct") -> Ragged: ...


@dataclass
class EvalResult:
    """Averages, per-user values (for paired tests) and the ranked lists of one evaluation."""

    metrics: dict[str, float]  # "recall@10", "ndcg@50", "coverage@20", ..., "n_users"
    per_user: pd.DataFrame  # one row per evaluated user: user, n_targets, every metric
    top_items: np.ndarray  # (n_users, max(ks)) int64, rows aligned with per_user


# --------------------------------------------------------------------------------------------
# Ragged helpers


def _row_pairs(ragged: Ragged, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flatten rows `rows` of `ragged` into (position of the row in `rows`, value) pairs."""
    starts = ragged.indptr[rows]
    lengths = ragged.indptr[rows + 1] - starts
    output_starts = np.cumsum(lengths) - lengths
    flat = np.repeat(starts - output_starts, lengths) + np.arange(int(lengths.sum()))
    positions = np.repeat(np.arange(len(rows), dtype=np.int64), lengths)
    return positions, ragged.values[flat].astype(np.int64)


def _take_rows(ragged: Ragged, rows: np.ndarray) -> Ragged:
    """A new Ragged made of rows `rows` of `ragged`, in that order."""
    lengths = ragged.indptr[rows + 1] - ragged.indptr[rows]
    indptr = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    _, values = _row_pairs(ragged, rows)
    return Ragged(indptr, values.astype(np.int32))


# --------------------------------------------------------------------------------------------
# Ranking


# Tile sizes of the CPU scoring loop: one tile is the (K * users, items) block of products
# for TILE_ROWS // K users and TILE_ITEMS items (16 MB of float32 at the defaults), so the max
# over the K interests reads products still in cache instead of whole (B, n) matrices. Tiles
# of 1024 to 4096 items ran within 5 % of each other (benchmarks/throughput.py, d = 64).
TILE_ROWS = 2048
TILE_ITEMS = 2048


def _max_over_interests(
    interests: torch.Tensor, item_block: torch.Tensor, workspace: torch.Tensor | None = None
) -> torch.Tensor:
    """(B, K, d), (n, d) -> (B, n): each item's best score over the K interests.

    On CPU the result is written into the first B * n entries of `workspace` when one is given
    (a flat float tensor reused between calls), which saves allocating fresh pages each time.
    """
    n_users, n_interests, dim = interests.shape
    n_block = item_block.shape[0]
    if interests.device.type != "cpu":
        # One (B, n) product per interest with an in-place maximum: K times less memory
        # than a (B, K, n) product followed by amax.
        scores = interests[:, 0] @ item_block.T  # (B, n)
        for k in range(1, n_interests):
            torch.maximum(scores, interests[:, k] @ item_block.T, out=scores)
        return scores

    if workspace is None or workspace.numel() < n_users * n_block:
        workspace = torch.empty(n_users * n_block, dtype=interests.dtype)
    scores = workspace[: n_users * n_block].view(n_users, n_block)
    if n_interests == 1:
        return torch.mm(interests[:, 0], item_block.T, out=scores)  # (B, d) @ (d, n)

    # NOTE: on CPU, one (B, n) product per interest writes and rereads K matrices of (B, n)
    # floats and ran at about a fifth of the machine's matmul rate for d = 64; these tiles
    # reach about half (benchmarks/throughput.py). The scores are the same dot products.
    by_interest = interests.transpose(0, 1)  # (B, K, d) -> (K, B, d)
    users_per_tile = max(1, TILE_ROWS // n_interests)
    tile = torch.empty(
        n_interests * min(users_per_tile, n_users) * min(TILE_ITEMS, n_block),
        dtype=interests.dtype,
    )
    for user_low in range(0, n_users, users_per_tile):
        user_high = min(user_low + users_per_tile, n_users)
        tile_users = user_high - user_low
        queries = by_interest[:, user_low:user_high].reshape(-1, dim)  # (K * b, d)
        for item_low in range(0, n_block, TILE_ITEMS):
            item_high = min(item_low + TILE_ITEMS, n_block)
            tile_items = item_high - item_low
            products = tile[: n_interests * tile_users * tile_items].view(-1, tile_items)
            torch.mm(queries, item_block[item_low:item_high].T, out=products)  # (K * b, c)
            torch.amax(
                products.view(n_interests, tile_users, tile_items),
                dim=0,
                out=scores[user_low:user_high, item_low:item_high],
            )  # (K, b, c) -> (b, c)
    return scores


def _torch_top(
    interests: torch.Tensor,
    item_vectors: torch.Tensor,
    masked_rows: torch.Tensor,
    masked_items: torch.Tensor,
    k: int,
    item_chunk: int | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k (scores, items) per row over all items, masked pairs and item 0 at -inf."""
    n_users = interests.shape[0]
    if interests.device.type != "cpu":
        return _block_top(interests, item_vectors, masked_rows, masked_items, k, item_chunk)

    # On CPU the users go TILE_ROWS // K at a time through one reused score buffer: a fresh
    # (B, N + 1) matrix per batch cost as much in page faults as the top-k itself.
    users_per_block = max(1, TILE_ROWS // interests.shape[1])
    chunk = item_vectors.shape[0] if item_chunk is None else item_chunk
    workspace = torch.empty(min(users_per_block, n_users) * chunk, dtype=interests.dtype)
    values, items = [], []
    for low in range(0, n_users, users_per_block):
        high = min(low + users_per_block, n_users)
        inside = (masked_rows >= low) & (masked_rows < high)
        block_values, block_items = _block_top(
            interests[low:high],
            item_vectors,
            masked_rows[inside] - low,
            masked_items[inside],
            k,
            item_chunk,
            workspace,
        )
        values.append(block_values)
        items.append(block_items)
    return torch.cat(values), torch.cat(items)


def _block_top(
    interests: torch.Tensor,
    item_vectors: torch.Tensor,
    masked_rows: torch.Tensor,
    masked_items: torch.Tensor,
    k: int,
    item_chunk: int | None,
    workspace: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`_torch_top` for one block of users, over blocks of `item_chunk` items."""
    n_rows = item_vectors.shape[0]  # N + 1
    chunk = n_rows if item_chunk is None else item_chunk
    best_scores = best_items = None
    for low in range(0, n_rows, chunk):
        high = min(low + chunk, n_rows)
        scores = _max_over_interests(interests, item_vectors[low:high], workspace)  # (B, n)
        if low == 0:
            scores[:, 0] = -torch.inf  # padding is never recommended
        inside = (masked_items >= low) & (masked_items < high)
        scores[masked_rows[inside], masked_items[inside] - low] = -torch.inf
        values, positions = torch.topk(scores, min(k, high - low), dim=1)
        items = positions + low
        if best_scores is not None:
            # Running merge: the top-k of (previous top-k U this block's top-k).
            values = torch.cat([best_scores, values], dim=1)
            items = torch.cat([best_items, items], dim=1)
            values, order = torch.topk(values, min(k, values.shape[1]), dim=1)
            items = torch.gather(items, 1, order)
        best_scores, best_items = values, items
    return best_scores, best_items


class _FaissRanker:
    """Exact inner-product search per interest, merged by each item's best score."""

    def __init__(self, item_vectors: torch.Tensor) -> None:
        try:
            import faiss
        except ImportError as error:  # pragma: no cover - depends on the environment
            raise ImportError(
                "use_faiss=True needs the faiss package (pip install faiss-cpu); "
                "use_faiss=False ranks the same items with torch"
            ) from error
        vectors = np.ascontiguousarray(item_vectors[1:].cpu().numpy(), dtype=np.float32)
        self.n_items = vectors.shape[0]
        self.index = faiss.IndexFlatIP(vectors.shape[1])
        self.index.add(vectors)  # faiss id j is item j + 1: padding is not in the index

    def top(
        self, interests: torch.Tensor, masked_rows: np.ndarray, masked_items: np.ndarray, k: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n_users, n_interests, dim = interests.shape
        # An item in the true top-k is ranked, by the interest that gives its best score,
        # below at most (k - 1) unmasked items and every masked item, so k + (masked items in
        # the longest row) candidates per interest suffice.
        longest = int(np.bincount(masked_rows, minlength=n_users).max()) if n_users else 0
        depth = min(k + longest, self.n_items)
        queries = np.ascontiguousarray(interests.reshape(-1, dim).cpu().numpy(), np.float32)
        scores, ids = self.index.search(queries, depth)  # (B * K, depth) each
        scores = scores.reshape(n_users, n_interests * depth)
        items = ids.reshape(n_users, n_interests * depth).astype(np.int64) + 1

        width = self.n_items + 1
        rows = np.arange(n_users, dtype=np.int64)[:, None]
        keys = (rows * width + items).ravel()
        scores = scores.ravel().copy()
        scores[np.isin(keys, masked_rows * width + masked_items)] = -np.inf
        # Keep one copy of each (user, item): the one with the best score.
        order = np.lexsort((-scores, keys))
        repeated = np.zeros(len(keys), dtype=bool)
        repeated[order[1:]] = keys[order[1:]] == keys[order[:-1]]
        scores[repeated] = -np.inf

        values, positions = torch.topk(torch.from_numpy(scores.reshape(n_users, -1)), k, dim=1)
        return values, torch.gather(torch.from_numpy(items), 1, positions)


def rank_top_items(
    model: nn.Module,
    histories: Ragged,
    users: np.ndarray,
    k: int,
    max_len: int,
    batch_users: int = 1024,
    item_chunk: int | None = None,
    device: str | torch.device = "cpu",
    use_faiss: bool = False,
) -> np.ndarray:
    """The k best items for each user in `users`, best first: (len(users), k) int64.

    Score of item v for a user: `max_k interests[k] . item_vectors[v]`, where `interests` is
    `model.interests` of the user's last `max_len` history items. Item 0 and every item of the
    user's full history row (not only the last `max_len`) score -inf and are never returned;
    if a user has fewer than k other items, the remaining slots hold -1.

    Users are processed `batch_users` at a time; `item_chunk` additionally splits the catalogue
    into blocks of that many items with a running top-k merge, so memory is
    O(batch_users * item_chunk) instead of O(batch_users * (N + 1)). `use_faiss=True` ranks
    with an exact faiss inner-product index instead of torch; it returns the same lists. Exact
    score ties are broken arbitrarily by torch.topk or faiss, so lists can differ between
    these settings only in the order or choice of equally scored items.
    """
    users = np.asarray(users, dtype=np.int64)
    if users.ndim != 1:
        raise ValueError(f"users must be a 1-D array of user ids, got shape {users.shape}")
    if len(users) and (users.min() < 0 or users.max() >= len(histories)):
        raise ValueError(f"users must lie in [0, {len(histories)}), the rows of histories")
    for name, value in (("k", k), ("max_len", max_len), ("batch_users", batch_users)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if item_chunk is not None and item_chunk < 1:
        raise ValueError(f"item_chunk must be None or >= 1, got {item_chunk}")

    was_training = model.training
    model.eval()
    top = np.empty((len(users), k), dtype=np.int64)
    try:
        with torch.inference_mode():
            item_vectors = model.item_vectors().to(device)  # (N + 1, d)
            n_items = item_vectors.shape[0] - 1
            if k > n_items:
                raise ValueError(f"k={k} exceeds the number of items N={n_items}")
            if not torch.isfinite(item_vectors).all():
                raise ValueError("model.item_vectors() contains NaN or infinite values")
            ranker = _FaissRanker(item_vectors) if use_faiss else None

            for start in range(0, len(users), batch_users):
                rows = users[start : start + batch_users]
                history = torch.from_numpy(histories.padded(rows, max_len, keep="last"))
                interests = model.interests(history.to(device))  # (B, L) -> (B, K, d)
                if interests.ndim != 3 or interests.shape[0] != len(rows):
                    raise ValueError(
                        f"model.interests must return (B, K, d) with B={len(rows)}, "
                        f"got shape {tuple(interests.shape)}"
                    )
                if not torch.isfinite(interests).all():
                    raise ValueError("model.interests() returned NaN or infinite values")
                masked_rows, masked_items = _row_pairs(histories, rows)

                if ranker is not None:
                    values, items = ranker.top(interests, masked_rows, masked_items, k)
                else:
                    values, items = _torch_top(
                        interests,
                        item_vectors.to(interests.dtype),
                        torch.from_numpy(masked_rows).to(device),
                        torch.from_numpy(masked_items).to(device),
                        k,
                        item_chunk,
                    )
                items = torch.where(torch.isinf(values), NO_ITEM, items)  # masked leftovers
                top[start : start + len(rows)] = items.cpu().numpy()
    finally:
        model.train(was_training)
    return top


# --------------------------------------------------------------------------------------------
# Accuracy metrics


@dataclass
class _Relevance:
    """Hits of each top-k slot and the ideal DCG table for one (top-k, targets) pair."""

    hits: np.ndarray  # (U, k) int64: number of target occurrences of the item in each slot
    n_relevant: np.ndarray  # (U,) int64: recall denominator
    target_rows: np.ndarray  # (T,) row of each distinct (user, target item)
    target_gains: np.ndarray  # (T,) gain of each distinct (user, target item), sorted per row

    @classmethod
    def build(cls, top_items: np.ndarray, targets: Ragged, count_repeats: bool) -> _Relevance:
        top_items = np.asarray(top_items)
        if top_items.ndim != 2 or len(top_items) != len(targets):
            raise ValueError(
                f"top_items must be (users, k) with one row per targets row ({len(targets)}), "
                f"got shape {top_items.shape}"
            )
        n_users = len(targets)
        largest = max(int(top_items.max(initial=0)), int(targets.values.max(initial=0)))
        width = largest + 2  # keys row * width + item never collide for items in [0, largest]
        rows = np.repeat(np.arange(n_users, dtype=np.int64), targets.lengths)
        keys, counts = np.unique(rows * width + targets.values, return_counts=True)
        if not count_repeats:
            counts = np.ones_like(counts)

        queries = np.arange(n_users, dtype=np.int64)[:, None] * width + top_items
        hits = np.zeros(top_items.shape, dtype=np.int64)
        if len(keys):
            found_at = np.minimum(np.searchsorted(keys, queries), len(keys) - 1)
            found = (top_items > 0) & (keys[found_at] == queries)
            hits[found] = counts[found_at[found]]

        key_rows = keys // width
        n_relevant = np.bincount(key_rows, weights=counts, minlength=n_users).astype(np.int64)
        order = np.lexsort((-counts, key_rows))  # per row, largest gain first
        return cls(hits, n_relevant, key_rows[order], counts[order])

    def check_n(self, n: int) -> None:
        if not 1 <= n <= self.hits.shape[1]:
            raise ValueError(f"N={n} must lie in [1, {self.hits.shape[1]}] (the top-k width)")

    def recall(self, n: int) -> np.ndarray:
        self.check_n(n)
        with np.errstate(invalid="ignore", divide="ignore"):
            values = self.hits[:, :n].sum(axis=1) / self.n_relevant
        return np.where(self.n_relevant > 0, values, np.nan)

    def hit_rate(self, n: int) -> np.ndarray:
        self.check_n(n)
        values = (self.hits[:, :n] > 0).any(axis=1).astype(np.float64)
        return np.where(self.n_relevant > 0, values, np.nan)

    def ndcg(self, n: int) -> np.ndarray:
        self.check_n(n)
        discount = 1.0 / np.log2(np.arange(2, n + 2))  # rank r (1-based) -> 1 / log2(r + 1)
        dcg = self.hits[:, :n] @ discount
        row_starts = np.searchsorted(self.target_rows, self.target_rows, side="left")
        rank = np.arange(len(self.target_rows)) - row_starts  # 0-based rank within the row
        ideal = rank < n
        idcg = np.bincount(
            self.target_rows[ideal],
            weights=self.target_gains[ideal] * discount[rank[ideal]],
            minlength=len(dcg),
        )
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.n_relevant > 0, dcg / idcg, np.nan)


def recall_at(
    top_items: np.ndarray, targets: Ragged, n: int, count_repeats: bool = False
) -> np.ndarray:
    """Per-user Recall@N, NaN for users without targets; report `np.nanmean` of it.

    Distinct targets (`count_repeats=False`, the study's protocol):
    `Recall@N = |top-N ∩ targets| / |targets|`, targets taken as a set.
    Authors' variant (`count_repeats=True`, for `targets(split, "authors")`): the numerator is
    the number of target occurrences (clicks) whose item is in the top-N, so an item clicked
    three times that day and recommended counts 3; the denominator is the number of target
    occurrences, repeated clicks and re-clicked history items included. History items are
    still never recommended here, so those clicks only ever enter the denominator.
    NOTE: ComiRec-style evaluation loops differ on whether a recommended item clicked twice
    counts once or twice in the numerator; here it counts twice, so Recall stays <= 1 and is
    the share of the day's clicks that the top-N covers.

    `top_items` (U, k) holds item ids best first (-1 for an empty slot, never a hit); row u of
    `targets` is user u's target list.
    """
    return _Relevance.build(top_items, targets, count_repeats).recall(n)


def hit_rate_at(
    top_items: np.ndarray, targets: Ragged, n: int, count_repeats: bool = False
) -> np.ndarray:
    """Per-user HitRate@N = 1[|top-N ∩ targets| > 0], NaN for users without targets.

    The same for both target variants (repeats do not change whether any target is hit).
    `count_repeats` is accepted for a uniform signature.
    """
    return _Relevance.build(top_items, targets, count_repeats).hit_rate(n)


def ndcg_at(
    top_items: np.ndarray, targets: Ragged, n: int, count_repeats: bool = False
) -> np.ndarray:
    """Per-user NDCG@N = DCG@N / IDCG@N, NaN for users without targets.

    `DCG@N = sum over ranks r = 1..N of gain(top[r]) / log2(r + 1)`.
    Distinct targets: gain is 1 for a target item and 0 otherwise, so
    `IDCG@N = sum_{r=1}^{min(|targets|, N)} 1 / log2(r + 1)`.
    Authors' variant (`count_repeats=True`): gain is the number of occurrences of the item
    among the targets (graded relevance), and IDCG@N is the DCG of the best possible list: the
    distinct target items sorted by occurrence count, first min(distinct targets, N) of them.
    """
    return _Relevance.build(top_items, targets, count_repeats).ndcg(n)


# --------------------------------------------------------------------------------------------
# Beyond accuracy


def _top_categories(top_items: np.ndarray, item_category: np.ndarray, n: int) -> np.ndarray:
    """(U, n) primary categories; empty slots get distinct labels below -1 that match nothing."""
    top = np.asarray(top_items)[:, :n]
    empty_labels = -2 - np.arange(n)
    return np.where(top > 0, item_category[np.maximum(top, 0)], empty_labels[None, :])


def category_coverage_at(
    top_items: np.ndarray, item_category: np.ndarray, n: int, n_categories: int | None = None
) -> np.ndarray:
    """Per-user category coverage: distinct known primary categories in the top-N / min(N, C).

    C is `n_categories` or, by default, the number of distinct primary categories among items
    1..N of `item_category`. Items of unknown category (-1) add no category: unknown is not a
    kind of content. `item_category` is (N + 1,) indexed by item id.
    """
    item_category = np.asarray(item_category)
    if n_categories is None:
        n_categories = len(np.unique(item_category[1:][item_category[1:] >= 0]))
    if n_categories < 1:
        return np.full(len(top_items), np.nan)
    labels = np.sort(_top_categories(top_items, item_category, n), axis=1)
    new_label = np.ones_like(labels, dtype=bool)
    new_label[:, 1:] = labels[:, 1:] != labels[:, :-1]
    distinct_known = (new_label & (labels >= 0)).sum(axis=1)
    return distinct_known / min(n, n_categories)


def intra_list_diversity_at(top_items: np.ndarray, item_category: np.ndarray, n: int) -> np.ndarray:
    """Per-user intra-list diversity: share of pairs of top-N items with different categories.

    `ILD@N = (number of pairs i < j with category(i) != category(j)) / (M (M - 1) / 2)` over
    the M filled slots of the top-N (M = N unless the user ran out of items; NaN if M < 2).
    Unknown category (-1) is compared as one more label: two unknown items count as the same
    category, an unknown and a known item as different, so every pair is defined.
    """
    labels = np.sort(_top_categories(top_items, item_category, n), axis=1)
    columns = np.arange(labels.shape[1])
    run_start = np.ones_like(labels, dtype=bool)
    run_start[:, 1:] = labels[:, 1:] != labels[:, :-1]
    # Position within a run of equal labels = number of earlier equal items = same-label pairs
    # that this item closes.
    first_of_run = np.maximum.accumulate(np.where(run_start, columns, 0), axis=1)
    same_pairs = (columns - first_of_run).sum(axis=1)
    filled = (np.asarray(top_items)[:, :n] > 0).sum(axis=1)
    all_pairs = filled * (filled - 1) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(all_pairs > 0, 1.0 - same_pairs / all_pairs, np.nan)


# --------------------------------------------------------------------------------------------
# The whole evaluation


def evaluate(
    model: nn.Module,
    dataset: EvaluationData,
    split: str = "valid",
    ks: tuple[int, ...] = (10, 20, 50),
    target_variant: str = "distinct",
    max_len: int | None = None,
    batch_users: int = 1024,
    item_chunk: int | None = None,
    device: str | torch.device = "cpu",
    use_faiss: bool = False,
) -> EvalResult:
    """Rank all items for every user with a target on `split` and compute every metric.

    History: `dataset.history(split)` (train for "valid", train + validation day for "test");
    the model sees its last `max_len` items (default `dataset.max_history`) and the whole row
    is masked. Targets: `dataset.targets(split, target_variant)`; users with no target in that
    variant are left out (so `n_users` can differ between variants). Metrics: recall@N,
    hit_rate@N, ndcg@N (see `recall_at`, `hit_rate_at`, `ndcg_at`; the "authors" variant
    counts repeated target occurrences), coverage@N and diversity@N
    (`category_coverage_at`, `intra_list_diversity_at`), each the mean over the evaluated users.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if target_variant not in TARGET_VARIANTS:
        raise ValueError(f"target_variant must be one of {TARGET_VARIANTS}, got {target_variant!r}")
    ks = tuple(int(n) for n in ks)
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be a non-empty tuple of positive cut-offs, got {ks}")
    max_len = dataset.max_history if max_len is None else max_len

    started = time.perf_counter()
    # NOTE: the authors' evaluation iterator drops the last partial batch of users
    # (read from their code); here every user with a target is evaluated.
    all_targets = dataset.targets(split, target_variant)
    users = np.flatnonzero(all_targets.lengths > 0)
    if len(users) == 0:
        raise ValueError(f"no user has a {target_variant!r} target on split {split!r}")
    top_items = rank_top_items(
        model,
        dataset.history(split),
        users,
        k=max(ks),
        max_len=max_len,
        batch_users=batch_users,
        item_chunk=item_chunk,
        device=device,
        use_faiss=use_faiss,
    )
    targets = _take_rows(all_targets, users)
    relevance = _Relevance.build(top_items, targets, count_repeats=target_variant == "authors")

    columns: dict[str, np.ndarray] = {"user": users, "n_targets": targets.lengths}
    for n in ks:
        columns[f"recall@{n}"] = relevance.recall(n)
        columns[f"hit_rate@{n}"] = relevance.hit_rate(n)
        columns[f"ndcg@{n}"] = relevance.ndcg(n)
        columns[f"coverage@{n}"] = category_coverage_at(top_items, dataset.item_primary_category, n)
        columns[f"diversity@{n}"] = intra_list_diversity_at(
            top_items, dataset.item_primary_category, n
        )
    per_user = pd.DataFrame(columns)
    metrics = {name: float(np.nanmean(values)) for name, values in columns.items()}
    del metrics["user"], metrics["n_targets"]
    metrics["n_users"] = len(users)

    seconds = time.perf_counter() - started
    logger.info(
        "evaluated %d users on %s (%s targets) in %.2f s: %s",
        len(users),
        split,
        target_variant,
        seconds,
        {name: round(value, 4) for name, value in metrics.items()},
    )
    return EvalResult(metrics=metrics, per_user=per_user, top_items=top_items)
