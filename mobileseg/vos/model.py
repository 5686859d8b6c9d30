"""The reuse-gated VOS network (G-FRTM-fast) and its eight static subgraphs.

Data-dependent control flow (the gate's branch) and per-object state do not fit one static graph, so the
network is deployed as subgraphs with explicit inputs and outputs and a host-side state machine
(``mobileseg.vos.session``). The subgraphs, in the order of the notes' §7.1:

=====================  ==========================================================  ===================
subgraph               inputs → outputs                                            runs
=====================  ==========================================================  ===================
backbone_low           pixels → f4, f8                                             every frame
backbone_high          f8 → f16, f32                                               full path (once/frame)
template               f8, mask8 → template                                        object start
matching               f8, f8_prev, score_prev, template → p_reuse, delta          every frame, per object
target_model           f16, project, filter → score, projected                     full path, per object
refiner_coarse         score, f32, f16 → refined                                   full path, per object
refine_translator      refined_prev, delta → refined                               reuse path, per object
refiner_fine           refined, score, f8, f4 → logits                             every frame, per object
=====================  ==========================================================  ===================

The host adds ``score = score_prev + delta`` on the reuse path, fits the target model's weights
(``mobileseg.vos.solver``), and aggregates objects.
"""

from __future__ import annotations


import torch
from torch import nn

from mobileseg.core import Graph, TensorSpec
from mobileseg.errors import MobilesegError
from mobileseg.vos.backbone import ResNet18High, ResNet18Low, init_resnet
from mobileseg.vos.modules import (
    TARGET_CHANNELS,
    ChangeCue,
    DeltaGenerator,
    RefinementStage,
    RefineTranslator,
    ReuseGate,
    TargetModel,
    TemplateGenerator,
    TemplateMatching,
    Upsampler,
)

CHANNELS = {"f4": 64, "f8": 128, "f16": 256, "f32": 512}
REFINE_CHANNELS = 64


class ReuseGateVOS(nn.Module):
    """All trainable and frozen parts of G-FRTM-fast (ResNet-18). The target model has no parameters here:
    its weights are fitted per object at run time and passed in.

    ``change_cue`` (mobileseg's default; not in the paper): the gate also sees how much f8 changed since the
    object's last computed frame (``ChangeCue``). ``change_cue=False`` is the paper's gate, which sees the
    dissimilarity D_t only (docs/vos.md: it did not rank held-out change without ImageNet features).
    """

    def __init__(self, change_cue: bool = True):
        super().__init__()
        self.change_cue = change_cue
        self.backbone_low = ResNet18Low()
        self.backbone_high = ResNet18High()
        self.template_generator = TemplateGenerator(CHANNELS["f8"] + 1)
        self.matching = TemplateMatching(CHANNELS["f8"] + 1)
        self.cue = ChangeCue() if change_cue else None
        self.gate = ReuseGate(64 + (ChangeCue.CHANNELS if change_cue else 0))
        self.delta_generator = DeltaGenerator()
        self.target_model = TargetModel()
        self.stage32 = RefinementStage(CHANNELS["f32"], REFINE_CHANNELS)
        self.stage16 = RefinementStage(CHANNELS["f16"], REFINE_CHANNELS)
        self.stage8 = RefinementStage(CHANNELS["f8"], REFINE_CHANNELS)
        self.stage4 = RefinementStage(CHANNELS["f4"], REFINE_CHANNELS)
        self.upsampler = Upsampler(REFINE_CHANNELS)
        self.translator = RefineTranslator(REFINE_CHANNELS)

    @classmethod
    def initialised(cls, seed: int, change_cue: bool = True) -> ReuseGateVOS:
        """Seeded initialisation: Kaiming backbone, PyTorch defaults elsewhere (from the same seed)."""
        torch.manual_seed(seed)
        model = cls(change_cue)
        init_resnet(model.backbone_low, seed)
        init_resnet(model.backbone_high, seed + 1)
        return model.eval()

    def gate_and_delta(
        self, f8: torch.Tensor, f8_prev: torch.Tensor, score_prev: torch.Tensor, template: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(P_reuse [B, 1], Δ [B, 1, h16, w16]). ``f8_prev`` is f8 of the object's last computed frame; the
        paper's gate (``change_cue=False``) ignores it."""
        dissimilarity = self.matching(f8, score_prev, template)
        gate_input = dissimilarity if self.cue is None else torch.cat([dissimilarity, self.cue(f8, f8_prev, score_prev)], dim=1)
        return self.gate(gate_input), self.delta_generator(dissimilarity)

    def refine_coarse(self, score: torch.Tensor, f32: torch.Tensor, f16: torch.Tensor) -> torch.Tensor:
        return self.stage16(f16, score, self.stage32(f32, score))

    def refine_fine(
        self, refined: torch.Tensor, score: torch.Tensor, f8: torch.Tensor, f4: torch.Tensor, image_size: tuple[int, int]
    ) -> torch.Tensor:
        x = self.stage4(f4, score, self.stage8(f8, score, refined))
        return self.upsampler(x, image_size)


# ---- subgraphs: modules with explicit inputs and outputs (no hidden state). Where a part of the model
# already has the subgraph's signature it is used as is; these wrappers compose the others. -------------


def validate_size(height: int, width: int, what: str = "VOS input size") -> None:
    """The subgraphs' shapes assume both sides divisible by 32 (f32 is 1/32) and at least 64."""
    if height % 32 or width % 32 or height < 64 or width < 64:
        raise MobilesegError(f"{what} must be multiples of 32 and at least 64x64; got {height}x{width}")


class MatchingGateDelta(nn.Module):
    def __init__(self, model: ReuseGateVOS):
        super().__init__()
        self.model = model

    def forward(self, f8, f8_prev, score_prev, template):
        return self.model.gate_and_delta(f8, f8_prev, score_prev, template)


class PaperMatchingGateDelta(MatchingGateDelta):
    """The paper's matching subgraph: no ``f8_prev`` input."""

    def forward(self, f8, score_prev, template):
        return self.model.gate_and_delta(f8, f8, score_prev, template)


class RefinerCoarse(nn.Module):
    def __init__(self, model: ReuseGateVOS):
        super().__init__()
        self.model = model

    def forward(self, score, f32, f16):
        return self.model.refine_coarse(score, f32, f16)


class RefinerFine(nn.Module):
    def __init__(self, model: ReuseGateVOS, image_size: tuple[int, int]):
        super().__init__()
        self.model = model
        self.image_size = image_size

    def forward(self, refined, score, f8, f4):
        return self.model.refine_fine(refined, score, f8, f4, self.image_size)


def _graph(name: str, module: nn.Module, inputs: dict[str, tuple[int, ...]], outputs: dict[str, tuple[int, ...]],
           runs: str) -> Graph:  # fmt: skip
    """A `Graph` from name → shape mappings (in call order); ``runs``: when the state machine runs it."""

    def specs(shapes: dict[str, tuple[int, ...]]) -> tuple[TensorSpec, ...]:
        return tuple(TensorSpec(n, tuple(shape), layout="NCHW" if len(shape) == 4 else None) for n, shape in shapes.items())

    return Graph(name, module, specs(inputs), specs(outputs), runs)


def feature_shapes(height: int, width: int) -> dict[str, tuple[int, ...]]:
    """Tensor shapes for a ``height × width`` input (both divisible by 32)."""
    h16, w16 = height // 16, width // 16
    return {
        "pixels": (1, 3, height, width),
        "f4": (1, CHANNELS["f4"], height // 4, width // 4),
        "f8": (1, CHANNELS["f8"], height // 8, width // 8),
        "f16": (1, CHANNELS["f16"], h16, w16),
        "f32": (1, CHANNELS["f32"], height // 32, width // 32),
        "mask8": (1, 1, height // 8, width // 8),
        "score": (1, 1, h16, w16),
        "template": (1, 64, 64),
        "p_reuse": (1, 1),
        "project": (TARGET_CHANNELS, CHANNELS["f16"]),
        "filter": (1, TARGET_CHANNELS * 9),
        "projected": (1, TARGET_CHANNELS, h16, w16),
        "refined": (1, REFINE_CHANNELS, h16, w16),
        "logits": (1, 1, height, width),
    }


def subgraphs(model: ReuseGateVOS, height: int, width: int) -> list[Graph]:
    """The eight subgraphs of ``model`` for a fixed input size, with their I/O names and shapes."""
    s = feature_shapes(height, width)

    def pick(*names: str) -> dict[str, tuple[int, ...]]:
        return {n: s[n] for n in names}

    return [
        _graph("backbone_low", model.backbone_low, pick("pixels"), pick("f4", "f8"), "every frame"),
        _graph("backbone_high", model.backbone_high, pick("f8"), pick("f16", "f32"), "full path, once per frame"),
        _graph("template", model.template_generator, pick("f8", "mask8"), pick("template"), "object start"),
        _graph(
            "matching", MatchingGateDelta(model) if model.change_cue else PaperMatchingGateDelta(model),
            {"f8": s["f8"], **({"f8_prev": s["f8"]} if model.change_cue else {}), "score_prev": s["score"], "template": s["template"]},
            {"p_reuse": s["p_reuse"], "delta": s["score"]}, "every frame, per object",
        ),  # fmt: skip
        _graph("target_model", model.target_model, pick("f16", "project", "filter"), pick("score", "projected"),
                 "full path, per object"),  # fmt: skip
        _graph("refiner_coarse", RefinerCoarse(model), pick("score", "f32", "f16"), pick("refined"), "full path, per object"),
        _graph(
            "refine_translator", model.translator, {"refined_prev": s["refined"], "delta": s["score"]}, pick("refined"),
            "reuse path, per object",
        ),  # fmt: skip
        _graph("refiner_fine", RefinerFine(model, (height, width)), pick("refined", "score", "f8", "f4"), pick("logits"),
                 "every frame, per object"),  # fmt: skip
    ]


SUBGRAPH_NAMES = (
    "backbone_low", "backbone_high", "template", "matching", "target_model", "refiner_coarse", "refine_translator", "refiner_fine",
)  # fmt: skip
