"""TrainConfig: every training option in one dataclass, parsed once at the edge."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..data.augment import RandomAffine
from ..distances import DISTANCES
from ..encoders import list_encoders
from ..errors import SiamkitError
from ..input_spec import InputSpec
from ..matryoshka import check_dims
from ..miners import MINERS

__all__ = ["TrainConfig"]

_PAIR_MINERS = {"all_pairs", "hard_pairs"}
_TRIPLET_MINERS = {"batch_hard", "semi_hard"}


@dataclass
class TrainConfig:
    """How to train a Siamese network.

    Model:
        encoder, encoder_kwargs: the registered encoder and its arguments
            (``in_channels`` is filled from the data).
        embedding_dim: output size (None = the encoder's pooled features).
        normalize: L2-normalise embeddings.
        distance: euclidean, sqeuclidean, cosine or l1.
        matryoshka_dims: nested embedding sizes, e.g. (16, 32, 64, 128), ending at the
            embedding size: the loss (any loss) is summed over the prefixes of these sizes,
            each re-normalised when ``normalize`` (:mod:`siamkit.matryoshka`); recorded in
            the saved model, whose consumers then take ``dim=`` any of them. None = off.
        matryoshka_weights: one weight per size (None = 1 each).

    Objective:
        loss: contrastive, triplet, binary (Koch's L1 pair head + BCE), mnr
            (multiple-negatives ranking between two samples of each class) or views
            (each image embedded under two random affine views must pick out its twin
            among the other classes' images: a supervised-contrastive loss; same-class
            images are not used as negatives).
        miner: all_pairs / hard_pairs (for contrastive, binary), batch_hard / semi_hard
            (for triplet); None picks the default for the loss.
        margin: triplet margin, or the contrastive negative margin.
        pos_margin: the contrastive positive margin.
        mnr_scale: similarity scale of the mnr loss.
        normsoftmax: a cosine classifier over learnt proxies of all training classes
            (NormFace; with ``margin`` > 0, CosFace's additive margin), scale
            ``classifier_scale``. The proxies are training state only: the saved model
            is the encoder, used with the distance like every other loss.
        instance_weight: weight of the ``views`` term added to another loss (0 = off,
            one view per image, cheaper). It keeps the embedding from collapsing onto
            the training classes, which helps on unseen classes when there are few
            training classes. instance_scale: the views term's similarity scale.
        cross_batch_memory: rows of a cross-batch memory (XBM, :mod:`siamkit.memory`;
            e.g. 16384; 0 = off): the triplet or contrastive loss mines each batch's
            anchors against the batch plus the embeddings of earlier batches.
        memory_warmup: steps trained without the memory before it is used and filled.

    Batches and schedule:
        batching: "classes" (batches of batch_size // m_per_class classes x
            m_per_class samples, mined in the batch) or "pairs" (batch_size // 2 random
            pairs, half genuine, half impostor: the classic tutorial setup; contrastive
            or binary loss only, no miner).
        batch_size, m_per_class: images per batch; samples per class (classes batching).
        classes_per_group: with ``fit(..., groups=...)`` (e.g. the alphabet of each
            character), take at most this many classes of one group into a batch and
            fill the batch group by group, so negatives come from the same group (hard,
            like a within-alphabet test); None = classes drawn from all groups at once.
        epochs, steps_per_epoch (None = len(train) // batch_size).
        optimizer: adam or adamw; lr, weight_decay, schedule (cosine: annealed to 0 over
        all steps of all epochs, updated every step; step: multiplied by gamma every
        step_size epochs; none), grad_clip (max gradient norm, None = off).
        ema: an exponential moving average of the weights with this decay per step, in
            [0, 1) (0 = off; e.g. 0.98: about the last 50 steps, once the warm-up
            of :func:`~siamkit.training.weight_average.warmed_decay` has reached it
            after 440 steps): validation,
            the best epoch and the saved model use the averaged weights
            (:mod:`siamkit.training.weight_average`).

    Augmentation (random affine on each batch):
        augment, rotation (degrees), shear (factor), scale (low, high), translate
        (fraction), fill (background value in [0, 1]: 1 for dark ink on white).
        lighting: strength in [0, 1] of a random lighting change per image (a smooth
            illumination field and a gamma, :class:`siamkit.data.lighting.RandomLighting`;
            0 = off), applied to the inputs after the affine transform.

    Validation and stopping:
        val_fraction: classes held out for validation (split by class, so validation
            measures unseen classes); patience: epochs without a better validation ROC
            AUC before stopping (None = never). tie_break: which epoch is kept when
            validation ties the best so far: "earlier" (the default) or "later" (a
            small validation set that saturates at AUC 1.0 otherwise freezes an early,
            barely trained network; a tie then also resets the patience).

    Input recipe (recorded in the saved model's ``input_spec``; a recipe file's
    ``[input]`` table):
        preprocess: preprocessing steps as ``{"kind": ..., ...}`` mappings (see
            :mod:`siamkit.data.preprocess`); the training images must be loaded with
            them (``siamkit train`` does), so that every later caller prepares raw files
            as training did. tta: the test-time augmentation of the model's embeddings
            (None, "shift", "flip", "shift+flip"); validation during training uses it too.

    Run:
        seed, precision (fp32, bf16 autocast, or auto = bf16 with channels_last on CPUs
        with native bfloat16 support, else fp32; measured here: 3.1x the images/s of
        fp32 at 28x28 with equal Omniglot accuracy, see docs/benchmarks.md),
        channels_last, progress (None = only on a terminal), health (the probe-batch
        statistics and alarms of :mod:`siamkit.training.health` after every epoch, and
        ``training.png`` in the run folder; they never change the weights), ensemble
        (n >= 2: n networks trained with seeds seed..seed+n-1, each with its own best
        epoch, joined into one model by :mod:`siamkit.training.ensemble`; n times the
        training and embedding cost).
    """

    encoder: str = "conv4"
    encoder_kwargs: dict[str, Any] = field(default_factory=dict)
    embedding_dim: int | None = 64
    normalize: bool = True
    distance: str = "euclidean"
    matryoshka_dims: tuple[int, ...] | None = None
    matryoshka_weights: tuple[float, ...] | None = None

    loss: str = "triplet"
    miner: str | None = None
    margin: float = 0.2
    pos_margin: float = 0.0
    mnr_scale: float = 20.0
    classifier_scale: float = 16.0
    instance_weight: float = 0.0
    instance_scale: float = 10.0
    cross_batch_memory: int = 0
    memory_warmup: int = 0

    batching: str = "classes"
    batch_size: int = 64
    m_per_class: int = 4
    classes_per_group: int | None = None
    epochs: int = 20
    steps_per_epoch: int | None = None
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = "cosine"
    step_size: int = 10
    gamma: float = 0.1
    grad_clip: float | None = None
    ema: float = 0.0

    augment: bool = False
    rotation: float = RandomAffine.degrees  # the augmentation's defaults are RandomAffine's
    shear: float = RandomAffine.shear
    scale: tuple[float, float] = RandomAffine.scale
    translate: float = RandomAffine.translate
    fill: float = RandomAffine.fill
    lighting: float = 0.0

    val_fraction: float = 0.2
    patience: int | None = 5
    tie_break: str = "earlier"

    preprocess: list[dict[str, Any]] = field(default_factory=list)
    tta: str | None = None

    seed: int = 0
    ensemble: int = 1
    precision: str = "auto"
    channels_last: bool = False
    progress: bool | None = None
    health: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.scale, list):
            self.scale = tuple(self.scale)  # type: ignore[assignment]
        self.preprocess = [dict(s) for s in self.preprocess]
        for name in ("matryoshka_dims", "matryoshka_weights"):
            if isinstance(getattr(self, name), list):
                setattr(self, name, tuple(getattr(self, name)))
        if self.tta == "none":
            self.tta = None
        if self.miner is None and self.batching != "pairs":
            self.miner = {"triplet": "batch_hard", "contrastive": "all_pairs", "binary": "all_pairs"}.get(
                self.loss
            )
        self.validate()

    def _validate_memory(self, bad: Any) -> None:
        if self.cross_batch_memory < 0 or self.memory_warmup < 0:
            bad(f"cross_batch_memory and memory_warmup must be >= 0, got {self.cross_batch_memory} and {self.memory_warmup}")
        if self.cross_batch_memory and (self.loss not in ("triplet", "contrastive") or self.batching != "classes"):
            bad(f"a cross-batch memory works with class batches and the triplet or contrastive loss, not {self.loss!r}"
                f" on {self.batching} batches")
        if self.cross_batch_memory and self.matryoshka_dims:
            bad("a cross-batch memory does not combine with matryoshka_dims")

    def validate(self) -> None:
        """Raise SiamkitError naming the first inconsistent option."""

        def bad(msg: str) -> None:
            raise SiamkitError(f"invalid training option: {msg}")

        if self.encoder not in list_encoders():
            bad(f"unknown encoder {self.encoder!r}; choose one of {list_encoders()}")
        if self.encoder == "ensemble":
            bad("the ensemble encoder is not trained directly: set ensemble = n (n networks of this encoder)")
        if not isinstance(self.ensemble, int) or self.ensemble < 1:
            bad(f"ensemble must be an integer >= 1 (networks trained, seeds apart), got {self.ensemble!r}")
        if self.ensemble > 1 and (self.loss == "binary" or self.matryoshka_dims):
            bad("an ensemble joins unit embeddings: it does not combine with the binary pair head or matryoshka_dims")
        if self.distance not in DISTANCES:
            bad(f"unknown distance {self.distance!r}; choose one of {sorted(DISTANCES)}")
        if self.batching not in ("classes", "pairs"):
            bad(f"batching {self.batching!r}; choose classes or pairs")
        if self.batching == "pairs":
            if self.loss not in ("contrastive", "binary"):
                bad(f"pair batches train the contrastive or binary loss, not {self.loss!r}")
            if self.miner is not None:
                bad("pair batches are used as given: set no miner")
            if self.instance_weight:
                bad("pair batches do not combine with instance_weight")
        elif self.loss not in ("contrastive", "triplet", "binary", "mnr", "views", "normsoftmax"):
            bad(f"loss {self.loss!r}; choose contrastive, triplet, binary, mnr, views or normsoftmax")
        if self.miner is not None and self.miner not in MINERS:
            bad(f"miner {self.miner!r}; choose one of {sorted(MINERS)}")
        if self.loss == "triplet" and self.miner not in _TRIPLET_MINERS:
            bad(f"the triplet loss needs a triplet miner ({sorted(_TRIPLET_MINERS)}), got {self.miner!r}")
        if self.loss in ("contrastive", "binary") and self.batching == "classes" and self.miner not in _PAIR_MINERS:
            bad(f"the {self.loss} loss needs a pair miner ({sorted(_PAIR_MINERS)}), got {self.miner!r}")
        if self.loss in ("mnr", "views", "normsoftmax") and self.miner is not None:
            bad(f"the {self.loss} loss uses in-batch negatives and takes no miner")
        if self.loss == "views" and self.instance_weight:
            bad("the views loss is already the instance term; leave instance_weight at 0")
        if self.loss == "mnr" and self.m_per_class < 2:
            bad("the mnr loss needs m_per_class >= 2")
        if self.cross_batch_memory or self.memory_warmup:
            self._validate_memory(bad)
        if self.epochs < 1:
            bad(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 2:
            bad(f"batch_size must be >= 2, got {self.batch_size}")
        if self.batching == "classes":
            if self.m_per_class < 1 or self.batch_size % self.m_per_class:
                bad(f"batch_size {self.batch_size} must be a multiple of m_per_class {self.m_per_class}")
            if self.batch_size // self.m_per_class < 2:
                bad("a batch must hold at least 2 classes (batch_size // m_per_class >= 2)")
        if self.classes_per_group is not None and self.classes_per_group < 2:
            bad(f"classes_per_group must be >= 2 or None, got {self.classes_per_group}")
        if self.classes_per_group is not None and self.batching != "classes":
            bad("classes_per_group applies to class batches (batching='classes')")
        if not 0.0 <= self.lighting <= 1.0:
            bad(f"lighting must be in [0, 1], got {self.lighting}")
        if not self.lr > 0:
            bad(f"lr must be > 0, got {self.lr}")
        if self.optimizer not in ("adam", "adamw"):
            bad(f"optimizer {self.optimizer!r}; choose adam or adamw")
        if self.schedule not in ("cosine", "step", "none"):
            bad(f"schedule {self.schedule!r}; choose cosine, step or none")
        if self.precision not in ("auto", "fp32", "bf16"):
            bad(f"precision {self.precision!r}; choose auto, fp32 or bf16")
        if not 0.0 <= self.val_fraction < 1.0:
            bad(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.tie_break not in ("earlier", "later"):
            bad(f"tie_break {self.tie_break!r}; choose earlier or later")
        if self.patience is not None and self.patience < 1:
            bad(f"patience must be >= 1 or None, got {self.patience}")
        if not self.classifier_scale > 0:
            bad(f"classifier_scale must be > 0, got {self.classifier_scale}")
        if self.instance_weight < 0:
            bad(f"instance_weight must be >= 0, got {self.instance_weight}")
        self._validate_matryoshka(bad)
        if isinstance(self.ema, bool) or not (isinstance(self.ema, (int, float)) and 0.0 <= self.ema < 1.0):
            bad(f"ema must be a decay in [0, 1) (0 = off), got {self.ema!r}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            bad(f"grad_clip must be > 0 or None, got {self.grad_clip}")
        try:
            InputSpec().with_recipe(self.preprocess, self.tta)
        except (TypeError, ValueError) as e:
            bad(str(e))

    def _validate_matryoshka(self, bad: Any) -> None:
        if self.matryoshka_dims is None:
            if self.matryoshka_weights is not None:
                bad("matryoshka_weights without matryoshka_dims")
            return
        try:
            dims = check_dims(self.matryoshka_dims, self.embedding_dim)
        except SiamkitError as e:
            bad(str(e))
        if self.matryoshka_weights is not None:
            w = self.matryoshka_weights
            if len(w) != len(dims) or any(not (isinstance(x, (int, float)) and x >= 0) for x in w) or not any(w):
                bad(f"matryoshka_weights must be {len(dims)} non-negative numbers, not all 0, got {list(w)}")

    def to_dict(self) -> dict[str, Any]:
        """Every option, JSON-able (``scale`` as a list)."""
        d = asdict(self)
        d["scale"] = list(self.scale)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        """The config of :meth:`to_dict`'s output (missing options take their defaults).

        Args:
            d: option name -> value.

        Returns:
            The validated config.

        Raises:
            SiamkitError: an unknown option or an inconsistent value.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise SiamkitError(f"unknown training option(s) {unknown}")
        return cls(**d)
