"""The embedded default model: a small CNN for 28x28 gray digits (MNIST).

``mnist_cnn(width)``: Conv3x3(w) -> ReLU -> MaxPool2 -> Conv3x3(2w) -> ReLU ->
MaxPool2 -> Conv6x6(4w) over the 7x7 map (-> 2x2) -> ReLU -> mean over the 2x2
map -> Linear(10). NCHW input (N, 1, 28, 28), logits out. About 79k parameters
at width 16.

The head is shaped for TFLite with a dynamic batch (litert-torch 0.10): a
``flatten`` bakes the batch size into a Reshape, and so does any NHWC -> NCHW
transpose of a 1x1 map (it is lowered to a Reshape with a constant shape), so the
last feature map is 2x2 and reduced by a MEAN, which keeps the batch dynamic.

Usable as a CLI factory: ``--torch edgeguard.converters.models:mnist_cnn``.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["MnistCNN", "mnist_cnn", "ColourCNN", "colour_cnn"]


class MnistCNN(nn.Module):
    def __init__(self, width: int = 16, num_classes: int = 10, in_channels: int = 1):
        super().__init__()
        w = int(width)
        self.conv1 = nn.Conv2d(in_channels, w, 3, padding=1)
        self.conv2 = nn.Conv2d(w, 2 * w, 3, padding=1)
        self.conv3 = nn.Conv2d(2 * w, 4 * w, 6)  # 7x7 -> 2x2: nearly dense over the map
        self.fc = nn.Linear(4 * w, num_classes)

    def forward(self, x):
        x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)
        x = torch.relu(self.conv3(x)).mean(dim=(2, 3))
        return self.fc(x)


def mnist_cnn(width: int = 16, num_classes: int = 10) -> MnistCNN:
    """A freshly initialised :class:`MnistCNN` (seed torch first for repeatable weights)."""
    return MnistCNN(width=width, num_classes=num_classes)


class ColourCNN(nn.Module):
    """A small CNN for 32x32 RGB patches: three Conv3x3 -> ReLU -> MaxPool2 stages (w, 2w,
    4w channels; 32 -> 4), a mean over the 4x4 map (dynamic-batch TFLite, as above), then
    Linear(num_classes). NCHW input (N, 3, 32, 32), logits out."""

    def __init__(self, width: int = 16, num_classes: int = 5, in_channels: int = 3):
        super().__init__()
        w = int(width)
        self.conv1 = nn.Conv2d(in_channels, w, 3, padding=1)
        self.conv2 = nn.Conv2d(w, 2 * w, 3, padding=1)
        self.conv3 = nn.Conv2d(2 * w, 4 * w, 3, padding=1)
        self.fc = nn.Linear(4 * w, num_classes)

    def forward(self, x):
        x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)
        x = torch.max_pool2d(torch.relu(self.conv3(x)), 2).mean(dim=(2, 3))
        return self.fc(x)


def colour_cnn(width: int = 16, num_classes: int = 5) -> ColourCNN:
    """A freshly initialised :class:`ColourCNN` (the colour job's model)."""
    return ColourCNN(width=width, num_classes=num_classes)
