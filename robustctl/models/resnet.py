"""CIFAR-style ResNet of depth 6n+2 (He et al. 2016, section 4.2), with an embedding output.

Three stages of n basic blocks with 16/32/64 channels (``width`` scales them), stride 2 at the
start of stages 2 and 3, global average pooling, and a linear head. The pooled 64-d vector is the
**embedding** z that the PDM losses shape and the KDE detector reads.

Normalization layers (``norm``): ``batch`` (BatchNorm2d after every convolution, He et al.),
``group`` (GroupNorm with ``norm_groups`` groups: per-image statistics, so an image's output does
not depend on the rest of its batch in training mode either) or ``none`` (no normalization; the
convolutions then get a bias). The switch tests the robustness-taxonomy claim that batch
normalization limits inter-class separation.

Inputs are [0, 1] images. The first layer is the input transform t (``transform``: an
:class:`~robustctl.transforms.base.InputTransform` such as the JPEG round trip, or the identity),
then per-channel normalization ``(t(x) - mean) / std`` with mean and std of the transformed
training images, held in buffers, so attacks and distortions stay in pixel space.
``logit_sign`` (a buffer, saved with the weights) is the loss's test-time transform: -1 for a
model trained with reverse cross-entropy, whose prediction is argmax(-Z).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from robustctl.config.validation import require
from robustctl.models.base import OPTIONS, ModelOutput


def make_activation(name: str, negative_slope: float) -> nn.Module:
    factories = {"relu": lambda: nn.ReLU(), "leaky_relu": lambda: nn.LeakyReLU(negative_slope)}
    return factories[name]()


# norm option -> (channels, groups) -> the layer after a convolution
NORMS: dict[str, Callable[[int, int], nn.Module]] = {
    "batch": lambda channels, groups: nn.BatchNorm2d(channels),
    "group": lambda channels, groups: nn.GroupNorm(groups, channels),
    "none": lambda channels, groups: nn.Identity(),
}


@dataclass
class ResNetConfig:
    """CIFAR-style ResNet of depth 6n+2 (He et al. 2016, section 4.2). ``norm``: the layer after
    each convolution, ``batch`` (BatchNorm), ``group`` (GroupNorm of ``norm_groups`` groups) or
    ``none``."""

    name: str = "resnet20"
    depth: int = 20
    width: int = 16
    activation: str = "leaky_relu"
    negative_slope: float = 0.1
    norm: str = "batch"
    norm_groups: int = 8

    def __post_init__(self) -> None:
        require(
            self.depth >= 8 and (self.depth - 2) % 6 == 0,
            "model.depth",
            f"must be 6n+2 with n >= 1 (8, 14, 20, 32, 56, ...), got {self.depth}",
        )
        require(
            self.name == f"resnet{self.depth}",
            "model.depth",
            f"{self.depth} does not match model {self.name!r} "
            f"(use model=resnet{self.depth} if that option exists)",
        )
        require(self.width >= 1, "model.width", f"must be >= 1, got {self.width}")
        require(
            self.activation in ("relu", "leaky_relu"),
            "model.activation",
            f"must be one of relu, leaky_relu; got {self.activation!r}",
        )
        require(
            self.negative_slope >= 0,
            "model.negative_slope",
            f"must be >= 0, got {self.negative_slope}",
        )
        require(
            self.norm in NORMS,
            "model.norm",
            f"must be one of {', '.join(NORMS)}; got {self.norm!r}",
        )
        require(
            self.norm != "group" or (self.norm_groups >= 1 and self.width % self.norm_groups == 0),
            "model.norm_groups",
            f"must divide model.width = {self.width} for norm=group, got {self.norm_groups}",
        )


@dataclass(frozen=True)
class Norm:
    """Which normalization follows each convolution (module docstring)."""

    kind: str = "batch"
    groups: int = 8

    def __call__(self, channels: int) -> nn.Module:
        return NORMS[self.kind](channels, self.groups)

    @property
    def conv_bias(self) -> bool:
        """Convolutions carry a bias only when no normalization layer (with its own shift)
        follows them."""
        return self.kind == "none"


class BasicBlock(nn.Module):
    """conv3x3-norm-act-conv3x3-norm plus shortcut (1x1 conv + norm where the shape changes), then
    act (norm: BatchNorm unless ``norm`` says otherwise)."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        stride: int,
        activation: str,
        negative_slope: float,
        norm: Norm = Norm(),
    ) -> None:
        super().__init__()
        bias = norm.conv_bias
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=bias)
        self.bn1 = norm(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=bias)
        self.bn2 = norm(c_out)
        self.act = make_activation(activation, negative_slope)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=bias), norm(c_out))

    def forward(self, x: Tensor) -> Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act(out + self.shortcut(x))


class ResNet(nn.Module):
    """ResNet-(6n+2). ``forward`` returns :class:`ModelOutput`; ``predict_logits`` the prediction
    view."""

    def __init__(
        self,
        depth: int = 20,
        num_classes: int = 10,
        in_channels: int = 3,
        width: int = 16,
        activation: str = "leaky_relu",
        negative_slope: float = 0.1,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        logit_sign: float = 1.0,
        norm: str = "batch",
        norm_groups: int = 8,
        transform: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"ResNet depth must be 6n+2 with n >= 1, got {depth}")
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r}; one of {', '.join(NORMS)}")
        if norm == "group" and width % norm_groups:
            raise ValueError(f"norm_groups {norm_groups} must divide the width {width}")
        layer_norm = Norm(norm, norm_groups)
        self.norm = norm
        n = (depth - 2) // 6
        self.depth, self.num_classes, self.in_channels = depth, num_classes, in_channels
        self.register_buffer("mean", torch.tensor(mean or [0.0] * in_channels).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std or [1.0] * in_channels).view(1, -1, 1, 1))
        self.register_buffer("logit_sign", torch.tensor(float(logit_sign)))
        # the input transform (robustctl.transforms): no learned state, so not in the state dict
        self.input_transform = transform if transform is not None else nn.Identity()
        widths = [width, 2 * width, 4 * width]
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=layer_norm.conv_bias),
            layer_norm(widths[0]),
            make_activation(activation, negative_slope),
        )
        blocks: list[nn.Module] = []
        c_in = widths[0]
        for stage, c_out in enumerate(widths):
            for b in range(n):
                stride = 2 if stage > 0 and b == 0 else 1
                blocks.append(
                    BasicBlock(c_in, c_out, stride, activation, negative_slope, layer_norm)
                )
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(widths[-1], num_classes)
        self.embedding_dim = widths[-1]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(
                    m.weight,
                    mode="fan_out",
                    a=negative_slope if activation == "leaky_relu" else 0.0,
                )

    def embed(self, x: Tensor) -> Tensor:
        """The embedding z: [N, C, H, W] in [0, 1] -> [N, 4 * width]."""
        return self.layer_outputs(x, ("embedding",))["embedding"]

    @property
    def layer_names(self) -> tuple[str, ...]:
        """Layers :meth:`layer_outputs` can return, input side first."""
        return ("stem", "stage1", "stage2", "stage3", "embedding")

    def layer_outputs(self, x: Tensor, layers: tuple[str, ...] | list[str]) -> dict[str, Tensor]:
        """One forward pass up to the embedding, returning the asked ``layers`` as [N, C] vectors:
        ``stem`` and ``stage1``..``stage3`` (the output of the stem and of each stage's last
        block) averaged over their spatial positions, and ``embedding`` (z). The single
        definition of the forward pass: :meth:`embed` is its ``embedding``."""
        unknown = set(layers) - set(self.layer_names)
        if unknown:
            raise ValueError(f"unknown layer(s) {sorted(unknown)}; known: {self.layer_names}")
        out: dict[str, Tensor] = {}
        h = self.stem((self.input_transform(x) - self.mean) / self.std)
        if "stem" in layers:
            out["stem"] = h.mean((2, 3))
        per_stage = len(self.blocks) // 3
        for i, block in enumerate(self.blocks):
            h = block(h)
            name = f"stage{(i + 1) // per_stage}"
            if (i + 1) % per_stage == 0 and name in layers:
                out[name] = h.mean((2, 3))
        if "embedding" in layers:
            out["embedding"] = self.pool(h).flatten(1)
        return out

    def forward(self, x: Tensor) -> ModelOutput:
        z = self.embed(x)
        return ModelOutput(self.head(z), z)

    def predict_logits(self, x: Tensor) -> Tensor:
        """Logits as the model predicts: ``logit_sign * Z`` (RCE-trained models negate)."""
        return self.logit_sign * self.head(self.embed(x))

    def prediction_view(self) -> PredictionView:
        """A plain ``images -> logits`` module for code that knows nothing of embeddings."""
        return PredictionView(self)


class PredictionView(nn.Module):
    """Wraps a project model so that ``forward(x)`` returns its prediction logits: a plain
    images -> logits module, the interface third-party attack libraries (torchattacks, ART) expect.

    The wrapper starts in the model's mode: libraries that restore the wrapper's mode after an
    attack call ``.train(mode)``, which recurses into the model, so a wrapper left in training mode
    would switch a shared model's batch norm to training.
    """

    def __init__(self, model: ResNet) -> None:
        super().__init__()
        self.model = model
        self.train(model.training)

    def forward(self, x: Tensor) -> Tensor:
        return self.model.predict_logits(x)


def build_resnet(cfg: ResNetConfig, **data_dependent: object) -> ResNet:
    """The ResNet ``cfg`` describes, for the data's sizes and normalization (``build_model``)."""
    return ResNet(
        depth=cfg.depth,
        width=cfg.width,
        activation=cfg.activation,
        negative_slope=cfg.negative_slope,
        norm=cfg.norm,
        norm_groups=cfg.norm_groups,
        **data_dependent,  # type: ignore[arg-type]
    )


for _depth in (8, 14, 20, 32, 56):  # the paper's ResNet-20/32/56; 8, 14: CPU, tests
    OPTIONS.add(ResNetConfig(name=f"resnet{_depth}", depth=_depth), build_resnet)
