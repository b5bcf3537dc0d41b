"""PyTorch modules used by the systems."""

from asdx.models.ae import AENet
from asdx.models.beats import BEATs, BEATsConfig, BEATsFeatures, tiny_config
from asdx.models.beats_checkpoint import RANDOM_TINY, RANDOM_TINY_NOTE, load_beats, resolve_beats_checkpoint
from asdx.models.cache import FeatureCache, beats_preprocessing
from asdx.models.heads import (ArcFace, AttentiveStatsPooling, CenterLoss, GeMPooling, Mixup, MultiTaskArcFace,
                               rdp_pool)

__all__ = ["AENet", "ArcFace", "AttentiveStatsPooling", "BEATs", "BEATsConfig", "BEATsFeatures", "CenterLoss",
           "FeatureCache", "GeMPooling", "Mixup", "MultiTaskArcFace", "RANDOM_TINY", "RANDOM_TINY_NOTE",
           "beats_preprocessing", "load_beats", "rdp_pool", "resolve_beats_checkpoint", "tiny_config"]
