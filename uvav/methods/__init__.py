"""Training methods: what each trains, which results it reports, and how tables show them.

Every method is one module of this package (or a plugin module, see :mod:`uvav.registry`) that defines its
config schema (extending :class:`~uvav.config.MethodConfig`) and registers a :class:`Method`; its YAML is
``conf/method/<name>.yaml``. The pipeline (:mod:`uvav.pipeline`), the tables and the comparison
(:mod:`uvav.reporting`), robustness curves and ``load_run`` read everything they need from here.

Two kinds: ``ft`` trains every weight; every other method is *frozen-base*: it starts from the fine-tuned model
of the same data, backbone and seed (trained first when absent), or with ``method.base=pretrained`` from the
``backbone.checkpoint`` itself (a ``method=pretrain`` checkpoint, not fine-tuned, with a new head), and is reported
beside the head-only baseline trained on that same frozen model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from uvav.cases import CASES, result_key
from uvav.config import MethodConfig, require
from uvav.registry import Registry

if TYPE_CHECKING:
    import torch
    from omegaconf import DictConfig

    from uvav.models.classifier import AVClassifier
    from uvav.models.prompts import PromptBank
    from uvav.pipeline import Context
    from uvav.train import Stage

FT = "ft"  # the fine-tuned model's stage and result key
HEAD_ONLY = "head_only"  # the baseline of every frozen-base method: the frozen model with its head retrained
HEAD_ONLY_LABEL = "Head only"
BASES = ("finetuned", "pretrained")  # method.base: what a frozen-base method trains on


@dataclass(frozen=True)
class Column:
    """A column of the method comparison (:mod:`uvav.reporting.compare`): result ``key`` of this method's jobs whose
    ``method.<k>`` equal ``where``, with the resources of ``stage``; columns are sorted by ``order``."""

    label: str
    key: str
    stage: str
    order: int = 50
    where: dict[str, Any] = field(default_factory=dict)


class Method:
    """A training method. Subclasses set the class attributes and override what differs."""

    name: ClassVar[str]
    schema: ClassVar[type[MethodConfig]]
    order: ClassVar[int] = 100  # position in tables (ft 0; built-in frozen-base methods 10, 20, 30)
    frozen_base: ClassVar[bool] = False  # trains on the frozen FT model (FrozenBaseMethod); schema: FrozenBaseConfig
    classifies: ClassVar[bool] = True  # False: its job trains no classifier (run_job) and is in no accuracy table
    uses_prompts: ClassVar[bool] = False  # its saved model has a prompt bank
    eval_modes: ClassVar[tuple[str, ...]] = ("none",)  # prompt modes its stage is scored in; the first selects
    title: ClassVar[str]  # its name in tables ("LoRA"): the defaults of the four table facts below derive from it
    comparison_order: ClassVar[int] = 50  # position of its default comparison column
    summary: ClassVar[str]  # one line: what the method trains (describe_result)
    not_distributed: ClassVar[str] = ""  # why its job cannot run under torchrun ('' : it can)
    # reporting (uvav.reporting): text and order that tables take from here, so that no table names a method
    table_note: ClassVar[str] = ""  # sentence on its accuracy-table columns (aggregated tables' notes)
    comparison_note: ClassVar[str] = ""  # sentence on its columns of the method comparison
    variant_order: ClassVar[int] = 9  # position of its rows on a base in the variant table (FT 0, head only 1)
    reference: ClassVar[bool] = False  # the variant table measures gaps and the parameter target against it
    stage_seed_offset: ClassVar[int] = 2  # a frozen-base stage trains with seed + this (head only's baseline: 1)

    def __repr__(self) -> str:
        return f"<method {self.name} ({type(self).__module__})>"

    @property
    def labels(self) -> dict[str, str]:
        """Result key -> accuracy-table column."""
        return {self.name: f"FT + {self.title}"}

    @property
    def stage_label(self) -> str:
        """The method's row of the resource table."""
        return self.title

    @property
    def improvements(self) -> dict[str, tuple[str, str]]:
        """Improvement column -> (minuend, subtrahend) result keys."""
        return {f"Improvement ({self.title} - FT)": (self.name, FT)}

    @property
    def comparison(self) -> tuple[Column, ...]:
        """Its columns of the method comparison."""
        return (Column(self.title, self.name, self.name, order=self.comparison_order),)

    @property
    def result_keys(self) -> list[str]:
        return [result_key(self.name, mode) for mode in self.eval_modes]

    @property
    def main_key(self) -> str:
        """The result key of the method's headline number (``metrics.json``'s ``main_mode``)."""
        return self.result_keys[0]

    def check(self, cfg: DictConfig) -> None:
        """Reject values of this method's own fields that cannot run (:class:`uvav.config.ConfigError`)."""

    def shares_encodings(self, cfg: DictConfig) -> bool:
        """True when its stage on the frozen base sees the base's encoder outputs unchanged and needs nothing else
        of a sample (no input-level prompt, no new weight inside the encoders, no prompts mixed from the input):
        it trains on the cached training views and is scored on the job's shared evaluation encodings
        (:mod:`uvav.train.shared`). False by default: a stage that is not sure encodes for itself."""
        return False

    def prepare(self, model: AVClassifier, method: Any) -> AVClassifier:
        """The layers a saved model of this method has beyond an AVClassifier, added before ``load_state_dict``."""
        return model

    def build_stage(self, cfg: DictConfig, base: AVClassifier, device: torch.device) -> Stage:
        """The training stage of a frozen-base method on ``device``, from ``base``: a frozen copy of the FT model,
        already on ``device`` (its head trains when ``method.train_head``). Its stage scores :attr:`eval_modes`."""
        raise NotImplementedError(f"method {self.name} has no stage on a frozen base")

    def run_job(self, ctx: Context) -> dict[str, Any]:
        """The whole job of a method that trains no classifier (:attr:`classifies` False): its metrics."""
        raise NotImplementedError(f"method {self.name} classifies: the pipeline runs its job")

    def bank(self, cfg: DictConfig) -> PromptBank:
        """The prompt bank of a job of this method (:attr:`uses_prompts` methods)."""
        raise NotImplementedError(f"method {self.name} has no prompts")

    def settings(self, method: Any, prompt: Any) -> str:
        """Its job's settings that tell variants apart in the comparison's variant table (``r=4``); '' by default."""
        return ""

    def describe(self, key: str, case: str | None = None) -> str:
        """One line saying what result ``key`` (one of :attr:`result_keys`) means."""
        return f"{key}: {self.summary}"

    def variant(self, method: Any) -> str:
        """A suffix telling jobs of this method apart in curves (e.g. how prompts were trained); '' by default."""
        return ""


class FrozenBaseMethod(Method):
    """A method on the frozen FT model, beside the head-only baseline; common checks of :class:`FrozenBaseConfig`."""

    frozen_base = True

    def check(self, cfg: DictConfig) -> None:
        m = cfg.method
        require(m.base_scenario in CASES, "method.base_scenario", m.base_scenario, f"one of {list(CASES)}")
        require(m.cache_features in ("auto", "on", "off"), "method.cache_features", m.cache_features,
                "auto, on or off")
        require(m.cached_views >= 1, "method.cached_views", m.cached_views, "an integer >= 1")
        require(m.cache_dtype in ("auto", "bf16", "fp16", "fp32"), "method.cache_dtype", m.cache_dtype,
                "auto, bf16, fp16 or fp32")
        require(m.cache_device_gb >= 0, "method.cache_device_gb", m.cache_device_gb, ">= 0")
        require(m.base in BASES, "method.base", m.base, f"one of {list(BASES)}")
        if m.base == "pretrained":
            require(bool(cfg.backbone.checkpoint), "backbone.checkpoint", cfg.backbone.checkpoint,
                    "a checkpoint (e.g. a method=pretrain job's model.pt) with method.base=pretrained")
            require(m.train_head, "method.train_head", m.train_head,
                    "true with method.base=pretrained (the pretrained model has no trained head)")


class PeftMethod(FrozenBaseMethod):
    """A method that inserts new layers into the frozen model (LoRA, adapters): :meth:`prepare` inserts them (new
    parameters require grad), and they train with the head on mixed batches of the training cases, no prompts."""

    def prepare(self, model: AVClassifier, method: Any) -> AVClassifier:
        raise NotImplementedError

    def new_parameters(self, model: AVClassifier) -> list[torch.nn.Parameter]:
        """The parameters :meth:`prepare` added (not the head, not the wrapped weights)."""
        raise NotImplementedError

    def build_stage(self, cfg: DictConfig, base: AVClassifier, device: torch.device) -> Stage:
        from uvav.train import Stage

        epochs, lr = schedule(cfg)
        return Stage.frozen(self.name, self.prepare(base, cfg.method).to(device), list(cfg.scenario.train_cases),
                            epochs=epochs, lr=lr, weight_decay=cfg.trainer.weight_decay)


@dataclass
class FrozenBaseConfig(MethodConfig):
    """Settings of every method that trains on the frozen FT model (and of its head-only baseline). Its stages'
    schedule is ``frozen.epochs``/``frozen.lr`` (one node for every frozen-base method, set by an experiment),
    unless ``method.epochs``/``method.lr`` are given."""

    epochs: int | None = "${frozen.epochs}"  # type: ignore[assignment]  # an interpolation, resolved by OmegaConf
    lr: float | None = "${frozen.lr}"  # type: ignore[assignment]
    base: str = "finetuned"  # the frozen model: finetuned (the FT model) | pretrained (backbone.checkpoint, new head)
    train_head: bool = True  # the classifier head trains with the method's own parameters
    head_only_baseline: bool = True  # also train the head alone (no prompts, no new layers): the honest baseline
    base_scenario: str = "complete"  # training case of the FT model that is frozen
    cache_features: str = "auto"  # reuse frozen encoder outputs across epochs: auto | on | off
    cached_views: int = 4  # corrupted views per sample and case precomputed when caching
    cache_dtype: str = "auto"  # cached encoder outputs: auto (bf16 on CUDA, fp16 on CPU) | bf16 | fp16 | fp32
    cache_device_gb: float = 16.0  # cached encoder outputs stay on the GPU up to this size, else in a file


METHODS: Registry[Method] = Registry("method", __name__)


def classifying() -> list[Method]:
    """The methods whose jobs report accuracy (every one but pretraining), in table order."""
    return [method for method in METHODS if method.classifies]


def schedule(cfg: DictConfig) -> tuple[int, float]:
    """(epochs, lr) of the method's own stage: ``method.epochs``/``method.lr`` (a frozen-base method's default to
    ``frozen.*``), else the trainer's."""
    return cfg.method.epochs or cfg.trainer.epochs, cfg.method.lr or cfg.trainer.lr


def ft_schedule(cfg: DictConfig) -> tuple[int, float]:
    """(epochs, lr) of the FT stage: the trainer's, or ``method.epochs``/``method.lr`` of ``method=ft`` itself
    (the FT model that frozen-base methods stand on always trains on the trainer's)."""
    return schedule(cfg) if cfg.method.name == FT else (cfg.trainer.epochs, cfg.trainer.lr)


def prompt_bank(cfg: DictConfig, pool: int = 0) -> PromptBank:
    """The prompt bank of a job, shaped by ``prompt`` and ``backbone``: one set per training case
    (``scenario.train_cases``), or with ``pool`` > 0 that many sets and a router (conditioned selection)."""
    from uvav.config import PromptConfig
    from uvav.models.prompts import PromptBank

    prompt, backbone = cfg.prompt, cfg.backbone
    names = [f"pool{i}" for i in range(pool)] if pool else list(cfg.scenario.train_cases)
    return PromptBank(names, prompt.kind, prompt.length, backbone.embed_dim, backbone.fusion_depth,
                      depth=prompt.get("depth", PromptConfig.depth),  # runs saved before deep prompts lack them
                      shared_depth=prompt.get("shared_depth", PromptConfig.shared_depth),
                      router_dim=4 * backbone.embed_dim if pool else 0, case_names=CASES)


def cache_views(cfg: DictConfig) -> int:
    """Corrupted views of the frozen encoders' outputs a frozen-base stage precomputes (0: no cache)."""
    return cfg.method.cached_views if cfg.method.cache_features != "off" else 0


def result_labels() -> dict[str, str]:
    """Every result key -> its accuracy-table column, in table order (FT, head only, then each method's)."""
    labels: dict[str, str] = {}
    for method in classifying():
        if method.frozen_base:
            labels.setdefault(HEAD_ONLY, HEAD_ONLY_LABEL)
        labels.update(method.labels)
    return labels


def stage_labels() -> dict[str, str]:
    """Every stage -> its resource-table row, in table order."""
    labels: dict[str, str] = {}
    for method in classifying():
        if method.frozen_base:
            labels.setdefault(HEAD_ONLY, HEAD_ONLY_LABEL)
        labels[method.name] = method.stage_label
    return labels


def improvements() -> dict[str, tuple[str, str]]:
    """Improvement column -> (minuend, subtrahend) result keys, paired per job."""
    return {name: pair for method in classifying() for name, pair in method.improvements.items()}


def comparison_columns() -> list[tuple[Method, Column]]:
    """The comparison's columns in order, each with the method whose jobs fill it."""
    pairs = [(method, column) for method in classifying() for column in method.comparison]
    return sorted(pairs, key=lambda pair: pair[1].order)


def reference_method() -> Method | None:
    """The method the variant table compares every other against (:attr:`Method.reference`), if one is."""
    return next((method for method in classifying() if method.reference), None)


def describe_result(key: str, case: str | None = None) -> str:
    """One line saying what result ``key`` means (``ft``, ``pl_uncertain``, ``lora``, ...)."""
    if key == HEAD_ONLY:
        return f"{HEAD_ONLY}: the frozen FT model with only its head retrained, no prompts"
    for method in classifying():
        if key in method.result_keys:
            return method.describe(key, case)
    return key


__all__ = ["BASES", "FT", "HEAD_ONLY", "METHODS", "Column", "FrozenBaseConfig", "FrozenBaseMethod", "Method",
           "PeftMethod", "cache_views", "classifying", "comparison_columns", "describe_result", "ft_schedule",
           "improvements", "prompt_bank", "reference_method", "result_labels", "schedule", "stage_labels"]
