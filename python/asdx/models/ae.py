"""The official DCASE Task 2 autoencoder (nttcslab/dcase2023_task2_baseline_ae, networks/dcase2023t2_ae/network.py)."""

from __future__ import annotations

import torch
from torch import nn

# PyTorch convention: running <- 0.99 * running + 0.01 * batch (Keras momentum 0.99).
BN_EPS = 1e-3
BN_MOMENTUM = 0.01


def _block(n_in: int, n_out: int) -> list[nn.Module]:
    return [nn.Linear(n_in, n_out), nn.BatchNorm1d(n_out, eps=BN_EPS, momentum=BN_MOMENTUM), nn.ReLU()]


class AENet(nn.Module):
    """640-128-128-128-128-8-128-128-128-128-640; BatchNorm + ReLU after every hidden layer,
    the 8-dim bottleneck included (so the code is non-negative); linear output.

    cov_source / cov_target are the 128 x 128 per-frame error covariances of the
    Selective Mahalanobis score, filled after training and saved with the weights,
    as in the official state_dict (non-trainable parameters, not buffers).
    """

    def __init__(self, input_dim: int = 640, hidden: int = 128, bottleneck: int = 8, n_mels: int = 128):
        super().__init__()
        self.input_dim = input_dim
        self.encoder = nn.Sequential(*_block(input_dim, hidden), *_block(hidden, hidden), *_block(hidden, hidden),
                                     *_block(hidden, hidden), *_block(hidden, bottleneck))
        self.decoder = nn.Sequential(*_block(bottleneck, hidden), *_block(hidden, hidden), *_block(hidden, hidden),
                                     *_block(hidden, hidden), nn.Linear(hidden, input_dim))
        self.cov_source = nn.Parameter(torch.zeros(n_mels, n_mels), requires_grad=False)
        self.cov_target = nn.Parameter(torch.zeros(n_mels, n_mels), requires_grad=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        code = self.encoder(x.reshape(-1, self.input_dim))
        return self.decoder(code), code
