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

    def folded(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The eval-mode network as affine maps [(weight.T, bias)], ReLU after each but the last.

        Each Linear + BatchNorm (running statistics) pair is one affine map, folded in float64:
        W' = s W, b' = s (b - mean) + beta with s = gamma / sqrt(var + eps). Scoring runs these
        (hidden_codes) instead of the modules: the BatchNorm passes over the activations are gone.
        """
        layers, modules = [], [*self.encoder, *self.decoder]
        for i, module in enumerate(modules):
            if not isinstance(module, nn.Linear):
                continue
            weight, bias = module.weight.detach().double(), module.bias.detach().double()
            norm = modules[i + 1] if i + 1 < len(modules) else None
            if isinstance(norm, nn.BatchNorm1d):
                scale = norm.weight.detach().double() / torch.sqrt(norm.running_var.double() + norm.eps)
                weight = weight * scale[:, None]
                bias = (bias - norm.running_mean.double()) * scale + norm.bias.detach().double()
            layers.append((weight.T.to(module.weight.dtype).contiguous(), bias.to(module.bias.dtype)))
        return layers

    @staticmethod
    def hidden_codes(x: torch.Tensor, folded: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """The last hidden layer's output (rows, hidden) of the eval-mode network (folded()): the input of the
        output Linear, whose affine map a caller applies itself (e.g. to a mean of these rows)."""
        h = x
        for weight_t, bias in folded[:-1]:
            h = torch.addmm(bias, h, weight_t)
            h.clamp_min_(0.0)
        return h
