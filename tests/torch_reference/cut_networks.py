"""PyTorch reference of the official CUT/Scenimefy networks, written from docs/reference.md §1 and §2.3.

Used only by parity tests and benchmarks (never by the library). Module indices and state-dict keys
are those of the official code, so a state dict from here is shaped like a released checkpoint.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def _blur_kernel(taps):
    a = torch.tensor(taps, dtype=torch.float32)
    k = a[:, None] * a[None, :]
    return k / k.sum()


class Downsample(nn.Module):
    """Reflect-pad 1, depthwise [1,2,1]^2/16 blur, stride 2 (docs/reference.md §1.3)."""

    def __init__(self, channels):
        super().__init__()
        self.register_buffer("filt", _blur_kernel([1.0, 2.0, 1.0])[None, None].repeat(channels, 1, 1, 1))

    def forward(self, x):
        return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), self.filt, stride=2, groups=x.shape[1])


class Upsample(nn.Module):
    """Replicate-pad 1, depthwise transposed conv (stride 2, padding 2), drop first and last row/col."""

    def __init__(self, channels):
        super().__init__()
        self.register_buffer("filt", (_blur_kernel([1.0, 3.0, 3.0, 1.0]) * 4)[None, None].repeat(channels, 1, 1, 1))

    def forward(self, x):
        y = F.conv_transpose2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), self.filt, stride=2, padding=2, groups=x.shape[1])
        return y[:, :, 1:, 1:][:, :, :-1, :-1]


class ResnetBlock(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=True), nn.InstanceNorm2d(dim), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=True), nn.InstanceNorm2d(dim),
        )

    def forward(self, x):
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    """resnet_9blocks, ngf 64, instance norm, anti-aliased down/up sampling (docs/reference.md §1.2)."""

    def __init__(self, ngf=64, n_blocks=9, input_nc=3, output_nc=3):
        super().__init__()
        layers = [
            nn.ReflectionPad2d(3), nn.Conv2d(input_nc, ngf, 7, bias=True), nn.InstanceNorm2d(ngf), nn.ReLU(True),
            nn.Conv2d(ngf, ngf * 2, 3, padding=1, bias=True), nn.InstanceNorm2d(ngf * 2), nn.ReLU(True),
            Downsample(ngf * 2),
            nn.Conv2d(ngf * 2, ngf * 4, 3, padding=1, bias=True), nn.InstanceNorm2d(ngf * 4), nn.ReLU(True),
            Downsample(ngf * 4),
        ]
        layers += [ResnetBlock(ngf * 4) for _ in range(n_blocks)]
        layers += [
            Upsample(ngf * 4), nn.Conv2d(ngf * 4, ngf * 2, 3, padding=1, bias=True), nn.InstanceNorm2d(ngf * 2), nn.ReLU(True),
            Upsample(ngf * 2), nn.Conv2d(ngf * 2, ngf, 3, padding=1, bias=True), nn.InstanceNorm2d(ngf), nn.ReLU(True),
            nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, 7, bias=True), nn.Tanh(),
        ]
        self.model = nn.Sequential(*layers)

    def forward(self, x, layers=(), encode_only=False):
        if not layers:
            return self.model(x)
        feats, h = [], x
        for index, module in enumerate(self.model):
            h = module(h)
            if index in layers:
                feats.append(h)
            if encode_only and index == layers[-1]:
                return feats
        return h, feats


def randomize_(module: nn.Module, seed: int, scale: float = 1.0) -> nn.Module:
    """Fills every learnable parameter with N(0, scale^2 * 2/fan_in) (He-like, so activations stay O(1)).

    Biases get N(0, 0.1^2). Fixed buffers (blur filters) are left alone.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim > 1:
                fan_in = int(np.prod(p.shape[1:]))
                p.copy_(torch.randn(p.shape, generator=g) * scale * np.sqrt(2.0 / fan_in))
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return module


def nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2))))


def nhwc(t: torch.Tensor) -> np.ndarray:
    return np.transpose(t.detach().numpy(), (0, 2, 3, 1))
