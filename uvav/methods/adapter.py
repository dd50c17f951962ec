"""``method=adapter``: bottleneck adapters in the frozen FT model (a baseline beside prompts).

``h + up(GELU(down(h)))`` with ``h = mlp(x)``, after the MLP of every transformer block and fusion cross-block
(Pfeiffer placement, inside the block's residual branch). ``up`` starts at zero, so before training the model
computes exactly what the FT model computes.

State-dict keys: the MLP's keep theirs (``mlp.fc1.weight``); new: ``<block>.mlp.adapter.down.{weight,bias}`` and
``<block>.mlp.adapter.up.{weight,bias}`` (e.g. ``fusion.0.audio_from_visual.mlp.adapter.up.weight``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from uvav.config import require
from uvav.methods import FT, METHODS, FrozenBaseConfig, PeftMethod

if TYPE_CHECKING:
    from torch import nn

    from uvav.models.classifier import AVClassifier


@dataclass
class AdapterConfig(FrozenBaseConfig):
    name: str = "adapter"
    adapter_bottleneck: int = 16  # hidden width of the adapter after every block's MLP


class Adapters(PeftMethod):
    name = "adapter"
    schema = AdapterConfig
    order = 30
    title = "Adapter"
    labels = {"adapter": "FT + adapter"}  # lower case in the committed tables
    improvements = {"Improvement (adapter - FT)": ("adapter", FT)}
    comparison_order = 20
    summary = "frozen FT model with bottleneck adapters, no prompts"
    variant_order = 3

    def check(self, cfg) -> None:
        super().check(cfg)
        require(cfg.method.adapter_bottleneck > 0, "method.adapter_bottleneck", cfg.method.adapter_bottleneck,
                "a positive integer")

    def settings(self, method: Any, prompt: Any) -> str:
        return f"bottleneck={method.get('adapter_bottleneck')}"

    def prepare(self, model: AVClassifier, method: Any) -> AVClassifier:
        from uvav.models.peft import add_adapters

        add_adapters(model, int(method.adapter_bottleneck))
        return model

    def new_parameters(self, model: AVClassifier) -> list[nn.Parameter]:
        from uvav.models.peft import Adapter

        return [p for m in model.modules() if isinstance(m, Adapter) for p in m.parameters()]


METHODS.register(Adapters())


MOVED_TO_MODELS = ('Adapter', 'AdaptedMlp', 'add_adapters')  # the layers live with the models now (uvav/models/peft.py)


def __getattr__(name: str) -> Any:
    """The layers' old import path keeps working, with a warning saying where they moved."""
    if name in MOVED_TO_MODELS:
        import warnings

        from uvav.models import peft

        warnings.warn(f"{__name__}.{name} moved to uvav.models.peft.{name}", DeprecationWarning, stacklevel=2)
        return getattr(peft, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
