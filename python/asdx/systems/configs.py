"""The systems' settings: one dataclass each, whose fields are the `asdx run <system>` flags and config keys.

They live here, apart from the systems, so that building the command line (`asdx run ae --help`, an argument
error) imports neither torch nor scikit-learn: this module needs only the standard library, pydantic and
asdx.config. Each system module imports its config from here (asdx.systems.ae.AEConfig is the same class).
"The report" is "Four systems for noise-aware unsupervised anomalous sound detection in DCASE 2026 Task 2".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal

from pydantic import Field

from asdx.config import validate_fields
from asdx.device import Device

SERA_CHECKPOINT_NAME = "BEATs_iter3_plus_AS2M_finetuned_on_AS2M_cpt1.pt"
FUSION_CHECKPOINT_NAME = "BEATs_iter3_plus_AS2M.pt"
PROTO_CHECKPOINT_NAME = "BEATs_iter3_plus_AS2M.pt"
BEAM_CHECKPOINT_NAME = "BEATs_iter3.pt"
EMBEDDING_NORMS = ("per-clip", "per-dimension", "none")
DISTANCE_NORMS = ("leave-one-out", "transductive", "none")


# ----------------------------------------------------------------------------- fields several systems share
# Each returns the dataclasses.field of one shared setting with its help text, so that a setting is declared
# once while every config keeps its own field order (the order of its flags and config keys).
def seed_field(default: int, seeds: str):
    """seed: int; `seeds` names what it seeds."""
    return field(default=default, metadata={"help": f"random seed of the {seeds}"})


View = Literal["near", "far", "mid", "w1"]  # asdx.features.VIEWS, which tests/test_views.py checks against
CHANNEL_VIEWS = {0: "near", 1: "far"}  # the AE's former --channel, kept as an alias


def view_field(default: str, reads: str = "reads"):
    """view: View; `reads` says what the system does with the view's audio."""
    return field(default=default, metadata={
        "help": f"the audio the system {reads}: near (microphone near the machine), far (the noisier one), mid "
                "((near + far) / 2) or w1 (near minus what far predicts linearly per frequency bin: "
                "asdx.features.stereo_view)"})


def resolve_channel_alias(config) -> None:
    """AEConfig.channel (0 near, 1 far), the former name of `view`: moved into view and cleared, so that view is
    the one field recorded. A channel that disagrees with a view other than the default is an error."""
    if config.channel is None:
        return
    wanted = CHANNEL_VIEWS[config.channel]
    if config.view not in ("near", wanted):
        raise ValueError(f"channel: {config.channel} means view {wanted}, but view is {config.view!r}; give one.")
    config.view, config.channel = wanted, None


def device_field():
    """device: Device."""
    return field(default="auto", metadata={"help": "torch device: auto (CUDA when torch sees a GPU), cpu, cuda, "
                                                   "cuda:N or mps"})


def beats_field(checkpoint: str):
    """beats: str | None; `checkpoint` says which checkpoint file the system expects."""
    return field(default=None, metadata={
        "help": f"BEATs checkpoint file ({checkpoint}) or 'random-tiny' (tests/demo); unset: $ASDX_BEATS"})


def layer_field(use: str):
    """layer: Annotated[int, Field(ge=0)] | None; `use` says what the layer's tokens do."""
    return field(default=None, metadata={
        "help": f"BEATs layer whose tokens {use} (0 = encoder input); unset: the last layer"})


def weight_decay_field():
    """weight_decay: Annotated[float, Field(ge=0)]."""
    return field(default=1e-2, metadata={"help": "AdamW weight decay"})


def arcface_s_field(default: float):
    """arcface_s: Annotated[float, Field(gt=0)]."""
    return field(default=default, metadata={"help": "ArcFace scale s"})


def arcface_m_field(default: float):
    """arcface_m: Annotated[float, Field(ge=0, lt=1.57)]."""
    return field(default=default, metadata={"help": "ArcFace additive angular margin m (radians, below pi/2)"})


def embed_batch_size_field(forward: str):
    """embed_batch_size: Annotated[int, Field(ge=1)]; `forward` names the forward pass it batches."""
    return field(default=16, metadata={"help": f"clips per {forward} / embedding batch"})


def feature_memory_field(held: str, stream: str):
    """feature_memory_mb: Annotated[int, Field(ge=0)]; `held` names what is held in RAM."""
    return field(default=2048, metadata={"help": f"hold {held} in RAM when they fit in this many MiB{stream}"})


def folds_field():
    """folds: Annotated[int, Field(ge=2)]."""
    return field(default=3, metadata={"help": "folds of threshold_scores=kfold"})


@dataclass
class AEConfig:
    """Hyper-parameters of the official baseline.yaml; every field is a CLI flag / config key.

    Types, ranges and choices are read from the annotations by asdx.config (pydantic).
    """

    epochs: Annotated[int, Field(ge=1)] = field(default=100, metadata={"help": "training epochs"})
    batch_size: Annotated[int, Field(ge=1)] = field(default=256, metadata={"help": "vectors per training batch"})
    lr: Annotated[float, Field(gt=0)] = field(default=1e-3, metadata={"help": "Adam learning rate"})
    validation_split: Annotated[float, Field(ge=0, lt=1)] = field(
        default=0.1, metadata={"help": "fraction of the training vectors held out for the validation loss "
                                       "(with threshold_scores=holdout: of each domain's clips)"})
    seed: int = seed_field(13711, "initialisation, split and shuffles")
    view: View = view_field("near", "turns into log-mel vectors")
    channel: Literal[0, 1] | None = field(default=None, metadata={
        "help": "alias of view, kept for old commands and configs: 0 = near, 1 = far"})
    score: Literal["MSE", "MAHALA"] = field(
        default="MAHALA", metadata={"help": "MSE = mean squared reconstruction error, MAHALA = selective "
                                            "Mahalanobis distance (min over source/target covariances)"})
    n_mels: Annotated[int, Field(ge=1)] = field(default=128, metadata={"help": "mel bands"})
    n_frames: Annotated[int, Field(ge=1)] = field(default=5, metadata={"help": "frames stacked into one vector"})
    n_fft: Annotated[int, Field(ge=2)] = field(default=1024, metadata={"help": "FFT size in samples"})
    hop_length: Annotated[int, Field(ge=1)] = field(default=512, metadata={"help": "STFT hop in samples"})
    device: Device = device_field()
    threshold_scores: Literal["in-sample", "holdout", "kfold", "official"] = field(
        default="kfold", metadata={"help": "train-normal scores the gamma threshold is fitted on: kfold = "
                                           "out-of-fold scores of `folds` extra models put on the final model's "
                                           "scale (final model unchanged, ~3x the training); holdout = "
                                           "validation_split of each domain's clips held out of training, scored "
                                           "by the final model (few scores); in-sample = training clips scored by "
                                           "the final model (optimistic); official = the official baseline's "
                                           "mini-batch scores"})
    folds: Annotated[int, Field(ge=2)] = folds_field()
    balance_domains: bool = field(
        default=True, metadata={"help": "threshold_scores holdout or kfold: repeat the target clips' honest "
                                        "scores so the gamma fit weighs both domains alike, as the test set "
                                        "does (half of it is target)"})

    def __post_init__(self):
        # The same checks as `asdx run` (types, ranges, choices) for Python callers: AEConfig(epochs=0) raises.
        validate_fields(self)
        resolve_channel_alias(self)


@dataclass
class SeraConfig:
    """sera_ft1 settings (the report §2.4); every field is a CLI flag / config key.

    embedding_dim is 256 as in SERA-style BEATs + ASP systems (ASDKit's BEATs/ASP
    recipe projects to 256 dimensions; the report's P_proto embedding is 256-d too).
    Types, ranges and choices are checked by asdx.config (pydantic) in __post_init__.
    """

    beats: str | None = beats_field(f"the report uses {SERA_CHECKPOINT_NAME}")
    layer: Annotated[int, Field(ge=0)] | None = layer_field("are pooled")
    view: View = view_field("near", "feeds BEATs")
    embedding_dim: Annotated[int, Field(ge=1)] = field(default=256, metadata={"help": "clip embedding size"})
    attention_dim: Annotated[int, Field(ge=1)] = field(default=128, metadata={
        "help": "hidden size of the ASP attention"})
    epochs: Annotated[int, Field(ge=1)] = field(default=50, metadata={"help": "most head-training epochs"})
    patience: Annotated[int, Field(ge=1)] = field(default=5, metadata={
        "help": "stop after this many epochs without a better validation loss"})
    lr: Annotated[float, Field(gt=0)] = field(default=1e-4, metadata={"help": "AdamW learning rate"})
    weight_decay: Annotated[float, Field(ge=0)] = weight_decay_field()
    batch_size: Annotated[int, Field(ge=2)] = field(default=32, metadata={"help": "clips per training batch"})
    validation_fraction: Annotated[float, Field(ge=0, lt=1)] = field(default=0.2, metadata={
        "help": "share of each (machine, domain) group held out for early stopping (0: monitor the train loss)"})
    seed: int = seed_field(0, "head initialisation, split and shuffles")
    main_weight: Annotated[float, Field(ge=0)] = field(default=1.0, metadata={
        "help": "loss weight of the machine-type ArcFace head"})
    aux_weight: Annotated[float, Field(ge=0)] = field(default=1.0, metadata={
        "help": "loss weight of every attribute ArcFace head"})
    arcface_s: Annotated[float, Field(gt=0)] = arcface_s_field(30.0)
    arcface_m: Annotated[float, Field(ge=0, lt=1.57)] = arcface_m_field(0.5)
    embedding_norm: Literal["per-clip", "per-dimension", "none"] = field(default="per-clip", metadata={
        "help": "embedding z-score before the distances: per-clip (each embedding over its own dimensions, as "
                "the report says), per-dimension (the machine's train-bank mean/std), none"})
    distance_norm: Literal["leave-one-out", "transductive", "none"] = field(default="leave-one-out", metadata={
        "help": "z-score of each bank's distances: leave-one-out (statistics of the bank's own train clips, "
                "inductive), transductive (statistics of the scored clips themselves, GenRep's form: test scores "
                "depend on each other), none"})
    device: Device = device_field()
    embed_batch_size: Annotated[int, Field(ge=1)] = embed_batch_size_field("BEATs forward")
    feature_memory_mb: Annotated[int, Field(ge=0)] = feature_memory_field("the BEATs tokens",
                                                                          ", else stream them from the cache")

    def __post_init__(self):
        validate_fields(self)
        if self.embedding_norm not in EMBEDDING_NORMS:  # validate_fields checks it too; kept for clarity
            raise ValueError(f"embedding_norm: expected one of {EMBEDDING_NORMS}, got {self.embedding_norm!r}.")
        if self.distance_norm not in DISTANCE_NORMS:
            raise ValueError(f"distance_norm: expected one of {DISTANCE_NORMS}, got {self.distance_norm!r}.")


@dataclass
class FusionConfig:
    """T_fusion settings (the report §2.3); every field is a CLI flag / config key."""

    beats: str | None = beats_field(f"the report uses {FUSION_CHECKPOINT_NAME}")
    view: View = view_field("near", "feeds BEATs")
    finetune_blocks: Annotated[int, Field(ge=0)] = field(default=4, metadata={
        "help": "top BEATs transformer blocks fine-tuned (the rest is frozen and its output cached)"})
    gem_p: Annotated[float, Field(ge=1)] = field(default=3.0, metadata={"help": "GeM pooling exponent p"})
    arcface_s: Annotated[float, Field(gt=0)] = arcface_s_field(64.0)
    arcface_m: Annotated[float, Field(ge=0, lt=1.57)] = arcface_m_field(0.2)
    epochs: Annotated[int, Field(ge=1)] = field(default=20, metadata={"help": "most training epochs"})
    patience: Annotated[int, Field(ge=1)] = field(default=3, metadata={
        "help": "stop after this many epochs without a better dev Ω (or validation loss)"})
    lr: Annotated[float, Field(gt=0)] = field(default=1e-4, metadata={"help": "AdamW learning rate of ArcFace"})
    backbone_lr: Annotated[float, Field(gt=0)] = field(default=1e-5, metadata={
        "help": "AdamW learning rate of the fine-tuned BEATs blocks"})
    weight_decay: Annotated[float, Field(ge=0)] = weight_decay_field()
    batch_size: Annotated[int, Field(ge=1)] = field(default=16, metadata={
        "help": "clips per micro-batch (per process); a step takes accumulation_steps x processes of them"})
    accumulation_steps: Annotated[int, Field(ge=1)] = field(default=1, metadata={
        "help": "micro-batches whose gradients are summed before each optimiser step"})
    early_stopping: Literal["auto", "dev-omega", "validation-loss"] = field(default="auto", metadata={
        "help": "dev-omega (kNN-scored dev test clips, official score), validation-loss, or auto: dev-omega "
                "when the dev machines' test clips have labels"})
    validation_fraction: Annotated[float, Field(gt=0, lt=1)] = field(default=0.1, metadata={
        "help": "share of each (machine, domain) group held out when early stopping watches the validation loss"})
    cache_trunk: bool = field(default=True, metadata={
        "help": "cache the frozen blocks' output per clip (false: recompute it from audio every epoch)"})
    spec_augment: bool = field(default=False, metadata={
        "help": "SpecAugment masks on the fbank while training (changes the trunk input: no trunk cache)"})
    seed: int = seed_field(0, "initialisation, batch order and augmentation")
    knn_k: Annotated[int, Field(ge=1)] = field(default=1, metadata={"help": "neighbours of the kNN scorer"})
    knn_metric: Literal["cosine", "l2"] = field(default="cosine", metadata={"help": "kNN distance"})
    gmm_components: Annotated[int, Field(ge=1)] | None = field(default=None, metadata={
        "help": "diagonal-GMM components; unset: chosen by BIC on the bank (1..gmm_max_components)"})
    gmm_max_components: Annotated[int, Field(ge=1)] = field(default=8, metadata={
        "help": "largest K the BIC choice considers"})
    gmm_folds: Annotated[int, Field(ge=2)] = field(default=5, metadata={
        "help": "folds of the GMM's out-of-fold train scores"})
    rank_norm: Literal["inductive", "transductive"] = field(default="inductive", metadata={
        "help": "inductive: rank among the scorer's honest train scores; transductive: rank within the scored "
                "set (test scores then depend on each other)"})
    device: Device = device_field()
    embed_batch_size: Annotated[int, Field(ge=1)] = embed_batch_size_field("BEATs forward")
    feature_memory_mb: Annotated[int, Field(ge=0)] = feature_memory_field("the cached trunk states",
                                                                          " (per process), else stream")

    def __post_init__(self):
        validate_fields(self)


@dataclass
class ProtoConfig:
    """P_proto settings (the report §2.2); every field is a CLI flag / config key."""

    beats: str | None = beats_field(PROTO_CHECKPOINT_NAME)
    layer: Annotated[int, Field(ge=0)] | None = layer_field("feed the network")
    view: View = view_field("near", "feeds the BEATs branch (the stereo branch always reads both channels)")
    size: Literal["full", "tiny"] = field(default="full", metadata={
        "help": "network size: full (~70 M parameters, the report's) or tiny (tests and the demo)"})
    use_spatial: bool = field(default=True, metadata={
        "help": "feed ILD, IPD, mid-side and GCC-PHAT (false: near/far log-mel only, the ablation)"})
    epochs: Annotated[int, Field(ge=1)] = field(default=50, metadata={"help": "training epochs per machine"})
    batch_size: Annotated[int, Field(ge=2)] = field(default=32, metadata={"help": "clips per batch"})
    lr: Annotated[float, Field(gt=0)] = field(default=1e-4, metadata={"help": "AdamW learning rate"})
    weight_decay: Annotated[float, Field(ge=0)] = weight_decay_field()
    mixup_alpha: Annotated[float, Field(gt=0)] = field(default=0.2, metadata={"help": "mixup Beta(alpha, alpha)"})
    mixup_prob: Annotated[float, Field(ge=0, le=1)] = field(default=0.5, metadata={
        "help": "share of batches mixed (0: no mixup)"})
    target_share: Annotated[float, Field(ge=0, lt=1)] = field(default=0.2, metadata={
        "help": "target-domain clips are drawn with replacement until they are this share of an epoch"})
    arcface_s: Annotated[float, Field(gt=0)] = arcface_s_field(30.0)
    arcface_m: Annotated[float, Field(ge=0, lt=1.57)] = arcface_m_field(0.5)
    center_weight: Annotated[float, Field(ge=0)] = field(default=1.0, metadata={
        "help": "weight of the center loss (visible-attribute machines)"})
    temperature: Annotated[float, Field(gt=0)] = field(default=0.1, metadata={
        "help": "temperature of the supervised contrastive loss (hidden-attribute machines)"})
    domain_weight: Annotated[float, Field(ge=0)] = field(default=1.0, metadata={
        "help": "weight of the domain cross-entropy (hidden-attribute machines)"})
    seed: int = seed_field(0, "initialisation, sampling, mixup")
    device: Device = device_field()
    embed_batch_size: Annotated[int, Field(ge=1)] = embed_batch_size_field("feature")
    feature_memory_mb: Annotated[int, Field(ge=0)] = feature_memory_field("one machine's cached features",
                                                                          ", else stream them")
    threshold_scores: Literal["kfold", "loo"] = field(default="kfold", metadata={
        "help": "train-normal scores the gamma threshold is fitted on: kfold = each clip scored by one of `folds` "
                "extra networks trained without it, put on the final network's scale (~folds x the training); "
                "loo = the final network's leave-one-out prototype distances (optimistic: it trained on the clips)"})
    folds: Annotated[int, Field(ge=2)] = folds_field()
    balance_domains: bool = field(default=True, metadata={
        "help": "repeat the target clips' threshold scores so the gamma fit weighs both domains alike, as the "
                "test set does (half of it is target)"})

    def __post_init__(self):
        validate_fields(self)


@dataclass
class BeamConfig:
    """beam settings (docs/systems/beam.md): frozen BEATs, RDP pooling per band, BEAM memory, VarMin; no training."""

    beats: str | None = beats_field(f"beam uses the pre-trained {BEAM_CHECKPOINT_NAME}, no AS2M fine-tuning")
    layer: Annotated[int, Field(ge=0)] | None = layer_field("are pooled per frequency band")
    view: View = view_field("w1", "feeds BEATs")
    gamma: Annotated[float, Field(ge=0)] = field(default=4.0, metadata={
        "help": "RDP exponent: frames weighted by (1 + relative deviation)^gamma over time (0: the plain mean)"})
    n_density_neighbors: Annotated[int, Field(ge=1)] = field(default=4, metadata={
        "help": "K of the VarMin density: mean distance of a reference to its K nearest other references"})
    varmin: bool = field(default=True, metadata={
        "help": "rescale the band scores by the references' densities (VarMin); false: raw BEAM scores"})
    seed: int = seed_field(0, "run (beam draws no random numbers; the seed names the run folder)")
    device: Device = device_field()
    embed_batch_size: Annotated[int, Field(ge=1)] = embed_batch_size_field("BEATs forward")
    feature_memory_mb: Annotated[int, Field(ge=0)] = feature_memory_field("the BEATs tokens",
                                                                          ", else stream them from the cache")

    def __post_init__(self):
        validate_fields(self)


__all__ = ["AEConfig", "BEAM_CHECKPOINT_NAME", "BeamConfig", "CHANNEL_VIEWS", "View",
           "DISTANCE_NORMS", "EMBEDDING_NORMS", "FUSION_CHECKPOINT_NAME", "FusionConfig",
           "PROTO_CHECKPOINT_NAME", "ProtoConfig", "SERA_CHECKPOINT_NAME", "SeraConfig",
           "resolve_channel_alias", "view_field"]
