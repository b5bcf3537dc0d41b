"""beam's back-end against the NumPy reference: rdp_pool, BandMemoryScorer (BEAM + VarMin), its leave-one-out scores."""

import pickle

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.exceptions import NotFittedError

from asdx.models import rdp_pool
from asdx.reference import band_memory as ref
from asdx.scoring import BandMemoryScorer
from asdx.scoring.band_memory import augmented_vectors

TOL = dict(rtol=1e-9, atol=1e-12)


def clips(seed, n, bands=3, dim=5, clusters=False):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, bands, dim))
    if clusters:  # a dense and a sparse region: densities differ, so alpha is not 0
        x[: n // 2] = x[: n // 2] * 0.1 + 3.0
    return x


# ----------------------------------------------------------------------------- RDP
@given(seed=st.integers(0, 2**16), gamma=st.sampled_from([0.0, 1.0, 4.0, 8.0, 2.5]), time=st.integers(1, 6))
@settings(max_examples=25, deadline=None)
def test_rdp_pool_matches_the_reference(seed, gamma, time):
    rng = np.random.default_rng(seed)
    tokens = rng.standard_normal((2, time, 3, 4)) * 10.0 ** rng.integers(-3, 3)
    np.testing.assert_allclose(rdp_pool(tokens, gamma), ref.rdp_pool(tokens, gamma), **TOL)
    pooled = rdp_pool(torch.tensor(tokens, dtype=torch.float32), gamma)
    assert pooled.dtype == torch.float32 and pooled.shape == (2, 3, 4)
    np.testing.assert_allclose(pooled.numpy(), ref.rdp_pool(tokens, gamma), rtol=1e-4, atol=1e-5 * np.abs(tokens).max())


def test_rdp_pool_gamma_zero_is_the_mean_and_a_constant_band_is_its_value():
    tokens = clips(0, 4, dim=6).reshape(2, 2, 3, 6)
    np.testing.assert_allclose(rdp_pool(tokens, 0.0), tokens.mean(axis=1), **TOL)
    tokens[:, :, 1] = 7.0  # max_t d = 0: d̂ = 0, plain mean
    np.testing.assert_allclose(rdp_pool(tokens, 4.0)[:, 1], 7.0, **TOL)


def test_rdp_pool_weighs_the_outlying_frame_more_than_the_mean_does():
    tokens = np.zeros((1, 5, 1, 2))
    tokens[0, 4, 0] = [1.0, 0.0]
    assert rdp_pool(tokens, 4.0)[0, 0, 0] > tokens.mean(axis=1)[0, 0, 0] * 2


@pytest.mark.parametrize("bad, pattern", [(np.zeros((2, 3, 4)), "expected \\(clips, time, bands, dim\\)"),
                                          (np.zeros((1, 0, 2, 2)), "no time steps")])
def test_rdp_pool_refuses_bad_tokens(bad, pattern):
    with pytest.raises(ValueError, match=pattern):
        rdp_pool(bad)
    with pytest.raises(ValueError, match="gamma: must be a finite number >= 0"):
        rdp_pool(np.zeros((1, 2, 1, 2)), gamma=-1)


# ----------------------------------------------------------------------------- scorer vs reference
@given(seed=st.integers(0, 2**16), n=st.integers(2, 12), k=st.integers(1, 6), varmin=st.booleans(),
       clusters=st.booleans())
@settings(max_examples=30, deadline=None)
def test_scorer_matches_the_reference(seed, n, k, varmin, clusters):
    """Densities, alpha, test band scores and the leave-one-out train scores, also with fewer than k + 1 clips."""
    memory, queries = clips(seed, n, clusters=clusters), clips(seed + 1, 4)
    scorer = BandMemoryScorer(n_density_neighbors=k, varmin=varmin).fit(memory)
    density, alpha = ref.fit(memory, k, varmin)
    np.testing.assert_allclose(scorer.density_, density, **TOL)
    np.testing.assert_allclose(scorer.alpha_, alpha, rtol=1e-7, atol=1e-9)
    raw, rescaled = scorer.band_scores(queries)
    np.testing.assert_allclose(raw, ref.band_scores(queries, memory), **TOL)
    np.testing.assert_allclose(rescaled, ref.band_scores(queries, memory, density, alpha), rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(scorer.score_samples(queries), rescaled.mean(axis=1), **TOL)
    loo_raw, loo_rescaled = ref.leave_one_out_band_scores(memory, k, varmin)
    np.testing.assert_allclose(scorer.train_raw_band_scores_, loo_raw, **TOL)
    np.testing.assert_allclose(scorer.train_band_scores_, loo_rescaled, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(scorer.train_scores_, loo_rescaled.mean(axis=1), rtol=1e-7, atol=1e-9)


def test_varmin_is_active_on_clustered_memories():
    """The reference comparison above would be vacuous if alpha were always 0."""
    scorer = BandMemoryScorer().fit(clips(3, 20, clusters=True))
    assert np.abs(scorer.alpha_).min() > 0.05
    raw, rescaled = scorer.band_scores(clips(4, 5))
    assert np.abs(raw - rescaled).min() > 1e-3


@given(seed=st.integers(0, 2**16), n=st.integers(2, 15))
@settings(max_examples=25, deadline=None)
def test_the_extra_dimension_trick_equals_the_direct_min(seed, n):
    """½ − ½ [x; 1]·[y; 2αb] = D − αb: the largest augmented inner product gives the reference's rescaled
    minimum."""
    memory, queries = clips(seed, n, clusters=True), clips(seed + 7, 6)
    density, alpha = ref.fit(memory, 4)
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
    for f in range(memory.shape[1]):
        q, y = augmented_vectors(unit(queries[:, f]), unit(memory[:, f]), alpha[f] * density[:, f])
        best = 0.5 - 0.5 * (q @ y.T).max(axis=1)
        np.testing.assert_allclose(best, ref.band_scores(queries, memory, density, alpha)[:, f], **TOL)


# ----------------------------------------------------------------------------- adversarial
def test_leave_one_out_never_matches_the_clip_itself_but_does_match_its_duplicate():
    x = clips(5, 8)
    duplicated = np.concatenate([x, x[:1]])  # clip 0 twice: each copy's LOO neighbour is the other, distance 0
    scorer = BandMemoryScorer(varmin=False).fit(duplicated)
    np.testing.assert_allclose(scorer.train_raw_band_scores_[[0, 8]], 0.0, atol=1e-12)
    assert scorer.train_raw_band_scores_[1:8].min() > 0.01  # the others never see themselves at distance 0
    np.testing.assert_allclose(scorer.train_raw_band_scores_, ref.leave_one_out_band_scores(duplicated, 4, False)[0],
                               **TOL)


def test_zero_variance_densities_give_alpha_zero():
    """A memory of one vector repeated, and one of two clips: every density is equal, Var(b) = 0, alpha = 0."""
    same = np.repeat(clips(6, 1), 6, axis=0)
    for memory in (same, clips(7, 2)):
        scorer = BandMemoryScorer().fit(memory)
        np.testing.assert_array_equal(scorer.alpha_, 0.0)
        np.testing.assert_allclose(scorer.train_band_scores_, scorer.train_raw_band_scores_, **TOL)
    np.testing.assert_allclose(BandMemoryScorer().fit(same).train_scores_, 0.0, atol=1e-12)


def test_zero_vectors_are_at_distance_one_half():
    memory = clips(8, 4)
    memory[1, 0] = 0.0
    scorer = BandMemoryScorer().fit(memory)
    np.testing.assert_allclose(scorer.density_, ref.fit(memory)[0], **TOL)
    raw, _ = scorer.band_scores(np.zeros((1, 3, 5)))
    np.testing.assert_allclose(raw, 0.5, **TOL)


def test_a_3d_memory_and_the_2d_one_band_form_agree():
    x = clips(9, 10, bands=1)
    a, b = BandMemoryScorer().fit(x), BandMemoryScorer().fit(x[:, 0])
    np.testing.assert_allclose(a.train_scores_, b.train_scores_, **TOL)
    np.testing.assert_allclose(a.score_samples(x[:3]), b.score_samples(x[:3, 0]), **TOL)


def test_float32_torch_input_scores_like_float64():
    memory, queries = clips(10, 30, clusters=True), clips(11, 5)
    exact = BandMemoryScorer().fit(memory)
    fast = BandMemoryScorer().fit(torch.tensor(memory, dtype=torch.float32))
    np.testing.assert_allclose(fast.train_scores_, exact.train_scores_, atol=2e-5)
    np.testing.assert_allclose(fast.score_samples(torch.tensor(queries, dtype=torch.float32)),
                               exact.score_samples(queries), atol=2e-5)


def test_anomalies_score_higher():
    rng = np.random.default_rng(12)
    centre = rng.standard_normal((1, 4, 16))
    normal = centre + 0.3 * rng.standard_normal((40, 4, 16))
    anomalous = -centre + 0.3 * rng.standard_normal((10, 4, 16))
    scorer = BandMemoryScorer().fit(normal[:30])
    assert scorer.score_samples(anomalous).min() > scorer.score_samples(normal[30:]).max()


def test_chunks_give_the_same_scores(monkeypatch):
    import asdx.scoring.band_memory as module

    memory, queries = clips(13, 25, clusters=True), clips(14, 9)
    whole = BandMemoryScorer().fit(memory)
    monkeypatch.setattr(module, "CHUNK_ELEMENTS", 3 * 25 * 2)  # two rows per chunk
    chunked = BandMemoryScorer().fit(memory)
    np.testing.assert_allclose(chunked.train_scores_, whole.train_scores_, **TOL)  # GEMM shapes differ: rounding
    np.testing.assert_allclose(chunked.band_scores(queries)[1], whole.band_scores(queries)[1], **TOL)


def test_errors_and_not_fitted():
    with pytest.raises(NotFittedError, match=r"before score_samples\(X\)"):
        BandMemoryScorer().score_samples(np.zeros((1, 2, 3)))
    with pytest.raises(NotFittedError, match="before reading train_scores_"):
        BandMemoryScorer().train_scores_
    with pytest.raises(ValueError, match="at least 2"):
        BandMemoryScorer().fit(torch.zeros(1, 2, 3))
    with pytest.raises(ValueError, match="n_density_neighbors: must be an integer >= 1"):
        BandMemoryScorer(n_density_neighbors=0).fit(clips(0, 3))
    with pytest.raises(ValueError, match="varmin: must be True or False"):
        BandMemoryScorer(varmin=1).fit(clips(0, 3))
    scorer = BandMemoryScorer().fit(clips(0, 3))
    with pytest.raises(ValueError, match="X has 2 band"):
        scorer.score_samples(np.zeros((1, 2, 5)))
    with pytest.raises(ValueError, match="expected \\(clips, bands, dim\\)"):
        scorer.score_samples(np.zeros((1, 3, 5, 1)))


def test_a_pickled_scorer_scores_the_same():
    memory, queries = clips(15, 12, clusters=True), clips(16, 3)
    scorer = BandMemoryScorer().fit(memory)
    copy = pickle.loads(pickle.dumps(scorer))
    np.testing.assert_array_equal(copy.score_samples(queries), scorer.score_samples(queries))
    np.testing.assert_array_equal(copy.train_scores_, scorer.train_scores_)
