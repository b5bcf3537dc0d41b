"""The per-machine score plot stays readable when the gamma fit is J-shaped."""

from __future__ import annotations

import numpy as np


def test_a_j_shaped_gamma_does_not_flatten_the_histograms():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from asdx.report import _plot_scores

    rng = np.random.default_rng(0)
    train = {"score": rng.gamma(0.4, 1.0, 40)}
    test = {"score": rng.gamma(0.4, 1.0, 20) + 0.5, "label": np.array([0, 1] * 10)}
    # shape 0.4 with loc just below the smallest score: the pdf is ~1e3 times the histogram bars there
    threshold = {"shape": 0.4, "loc_fitted": float(train["score"].min()) - 1e-9, "scale": 1.0, "threshold": 2.0,
                 "q": 0.9}
    fig, ax = plt.subplots()
    _plot_scores(ax, train, test, threshold)
    bins = np.linspace(min(train["score"].min(), test["score"].min()), max(train["score"].max(),
                                                                          test["score"].max()), 40)
    tallest_bar = max(np.histogram(scores, bins=bins, density=True)[0].max() for scores in
                      (train["score"], test["score"][test["label"] == 0], test["score"][test["label"] == 1]))
    assert ax.get_ylim()[1] <= 1.3 * tallest_bar + 1e-9
    plt.close(fig)
