"""k-nearest-neighbour anomaly scores against normal banks (SERA / T_fusion, system report §2.3–2.4)."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator

from asdx.index import METRICS, Bank
from asdx.scoring._domains import DOMAINS, domain_masks
from asdx.scoring._estimator import check_choice, check_int, check_n_features, check_X, require_fitted

DEVICES = (None, "cpu", "cuda")


class KNNScorer(BaseEstimator):
    """Mean distance to the k nearest normal embeddings, minimum over the domain banks.

    fit(X, domain=labels) builds one exact bank (asdx.index.Bank) per domain present (990 source and
    10 target clips in DCASE); score_samples takes, per clip, the smaller of its
    source-bank and target-bank scores, so a clip close to either normal domain
    is normal. Higher is more anomalous: the DCASE sign, the opposite of scikit-learn's outlier
    detectors (whose score_samples is higher = more normal).

    A scikit-learn estimator otherwise: constructor arguments are stored unchanged (checked in
    fit), get_params/clone work, fit(X, y=None, *, domain=None) ignores y (so a Pipeline routes
    `knnscorer__domain=...` to it), and an unfitted scorer raises NotFittedError.

    Parameters: k (an integer >= 1), metric ("l2" or "cosine"), device (None: where X is;
    "cpu": NumPy GEMM; "cuda": a FAISS GPU index).

    Learned: banks_ (domain -> Bank), train_rows_ (domain -> row indices into X), n_features_in_,
    and train_scores_, the honest scores of the training rows (see its docstring).
    Per-domain columns (source, target; DOMAINS order), whose row minimum is the score, for systems that
    treat the domains apart (sera's z-scored banks, fusion's per-domain ranks): domain_distances(X) and
    train_domain_distances_.
    """

    def __init__(self, k: int = 1, metric: str = "l2", device: str | None = None):
        self.k = k
        self.metric = metric
        self.device = device

    def fit(self, X, y=None, *, domain=None) -> "KNNScorer":
        """One bank per domain of `domain` ("source"/"target" or 0/1 per row; None: all rows one bank).

        y: ignored (scikit-learn's convention for unsupervised estimators); the labels go in `domain`.
        """
        check_int(self, "k", 1)
        check_choice(self, "metric", METRICS)
        check_choice(self, "device", DEVICES)
        x = check_X(X, self, dtype=np.float32, fitting=True)
        masks = domain_masks(domain, x.shape[0])
        host = x.numpy()
        self.banks_ = {}
        self.train_rows_ = {}
        for name, mask in masks.items():
            if mask.sum() < self.k:
                raise ValueError(f"X: the {name} domain has {int(mask.sum())} sample(s), fewer than k = {self.k}.")
            self.train_rows_[name] = np.flatnonzero(mask)
            self.banks_[name] = Bank(host[mask], metric=self.metric, device=self.device)
        self.n_features_in_ = x.shape[1]
        self._train = np.array(host, copy=True)  # train_scores_ reads it later: not a view of the caller's X
        self._train_columns_cache = None
        return self

    def score_samples(self, X) -> np.ndarray:
        """(N,) float64: min over domains of the mean distance to the k nearest bank members.

        DCASE sign: higher = more anomalous, the opposite of scikit-learn's outlier detectors
        (whose score_samples is higher = more normal).
        """
        require_fitted(self, "banks_", "score_samples(X)")
        return np.nanmin(self.domain_distances(X), axis=1)

    def domain_distances(self, X) -> np.ndarray:
        """(N, 2) float64: the mean distance to the k nearest members of the source bank and of the target
        bank (columns in DOMAINS order); NaN in the column of a domain without a bank."""
        require_fitted(self, "banks_", "domain_distances(X)")
        x = check_X(X, self, dtype=np.float32)
        check_n_features(self, x)
        out = np.full((x.shape[0], len(DOMAINS)), np.nan)
        for name, bank in self.banks_.items():
            out[:, DOMAINS.index(name)] = np.asarray(bank.search(x.numpy(), min(self.k, bank.size)).distances).mean(1)
        return out

    @property
    def train_scores_(self) -> np.ndarray:
        """Honest scores of the training rows, float64 (N,) in fit order, DCASE sign: leave-one-out.

        Row i is scored as score_samples would score it had it not been in the training data:
        against its own domain's bank without itself, and against the other domains' banks in
        full, the minimum over domains (of train_domain_distances_). (In-sample, every row would
        be its own nearest neighbour.) Raises NotFittedError before fit, and ValueError when a row
        has no neighbours left (a lone domain bank of exactly k rows).
        """
        require_fitted(self, "banks_", "reading train_scores_")
        columns = self.train_domain_distances_
        if np.isnan(columns).all(axis=1).any():
            raise ValueError(f"X: a domain bank with only k = {self.k} rows and no other bank has no "
                             "leave-one-out neighbours; use a smaller k or fit both domains.")
        return np.nanmin(columns, axis=1)

    @property
    def train_domain_distances_(self) -> np.ndarray:
        """(N, 2) float64, the training rows' domain_distances with each row left out of its own domain's bank;
        NaN where there is no distance (no bank of that domain, or the row's own bank holds only k rows).
        Computed on first access and cached; each access returns a copy."""
        require_fitted(self, "banks_", "reading train_domain_distances_")
        if self._train_columns_cache is None:
            self._train_columns_cache = self._leave_one_out_columns()
        return self._train_columns_cache.copy()

    def _leave_one_out_columns(self) -> np.ndarray:
        out = np.full((self._train.shape[0], len(DOMAINS)), np.nan)
        for name, rows in self.train_rows_.items():
            for other, bank in self.banks_.items():
                if other == name:
                    if bank.size <= self.k:  # nothing left to compare with once the row is out
                        continue
                    distances = bank.leave_one_out(self._train[rows], self.k).distances
                else:
                    distances = bank.search(self._train[rows], min(self.k, bank.size)).distances
                out[rows, DOMAINS.index(other)] = np.asarray(distances).mean(axis=1)
        return out
