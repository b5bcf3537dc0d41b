"""PyTorch modules used by the systems."""

from asdx.models.ae import AENet

__all__ = ["AENet"]
