"""Convolutional auto-encoders for one-channel 128 x 128 slices on the model grid.

The encoder's linear bottleneck (``latent_dim`` floats, no activation) is the feature vector of a
slice. Two architectures (:data:`ARCHITECTURES`):

``shallow`` (the talk's first model)
    encoder: four strided convolutions with ELU, 1 → 16 → 32 → 64 → 64 channels,
    128² → 64² → 32² → 16² → 8² (5 x 5 kernels, the last 3 x 3), flatten (4096),
    Linear(4096, latent_dim). Decoder mirrored: Linear(latent_dim, 4096) + ELU, four
    transposed convolutions (4 x 4, stride 2) 64 → 64 → 32 → 16 → 1, ELU between them,
    linear output. ELU rather than ReLU: on OpenKBP CT it converged markedly faster
    (about +1 dB PSNR after 10 epochs on a 1,500-slice subset); BatchNorm, LeakyReLU and GELU
    helped less.
``deep`` (more layers, BatchNorm, more capacity)
    encoder: five down-sampling blocks to 4 x 4, each a stride-2 3 x 3 convolution and a 3 x 3
    convolution, both with BatchNorm and ReLU, 16 → 32 → 64 → 128 → 256 channels
    (128² → 64² → 32² → 16² → 8² → 4²), flatten (4096), Linear(4096, latent_dim). Decoder
    mirrored: Linear(latent_dim, 4096) + ReLU, five up-sampling blocks (a 4 x 4 stride-2
    transposed convolution and a 3 x 3 convolution, BatchNorm and ReLU), a 3 x 3 convolution to
    one channel, linear output.

Both decoders have a linear output: the loss is MSE on the preprocessed scale
(:mod:`medhash.features.preprocess`).
"""
from __future__ import annotations

import torch
from torch import nn

from ..core.grid import GRID_SIZE
from .catalog import ARCH_REVISION, ARCHITECTURES, check_arch  # noqa: F401  (re-exported)

class AutoEncoder(nn.Module):
    """An encoder (image → ``latent_dim`` features) and a decoder (features → image).

    Input and output: (n, 1, 128, 128) float32 on the preprocessed scale.

    Attributes
    ----------
    arch : architecture name.
    latent_dim : length of the feature vector.
    encoder, decoder : the two halves (``nn.Sequential``).
    """

    def __init__(self, arch: str, latent_dim: int, encoder: nn.Module, decoder: nn.Module) -> None:
        super().__init__()
        self.arch = arch
        self.latent_dim = int(latent_dim)
        self.encoder = encoder
        self.decoder = decoder

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(n, 1, 128, 128) → (n, latent_dim) features."""
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(n, latent_dim) → (n, 1, 128, 128) reconstruction."""
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def _shallow(latent_dim: int) -> tuple[nn.Module, nn.Module]:
    c = (16, 32, 64, 64)
    side = GRID_SIZE // 16                        # 8
    flat = c[-1] * side * side                    # 4096
    encoder = nn.Sequential(
        nn.Conv2d(1, c[0], 5, stride=2, padding=2), nn.ELU(),        # 64
        nn.Conv2d(c[0], c[1], 5, stride=2, padding=2), nn.ELU(),     # 32
        nn.Conv2d(c[1], c[2], 5, stride=2, padding=2), nn.ELU(),     # 16
        nn.Conv2d(c[2], c[3], 3, stride=2, padding=1), nn.ELU(),     # 8
        nn.Flatten(),
        nn.Linear(flat, latent_dim),
    )
    decoder = nn.Sequential(
        nn.Linear(latent_dim, flat), nn.ELU(),
        nn.Unflatten(1, (c[3], side, side)),
        nn.ConvTranspose2d(c[3], c[2], 4, stride=2, padding=1), nn.ELU(),   # 16
        nn.ConvTranspose2d(c[2], c[1], 4, stride=2, padding=1), nn.ELU(),   # 32
        nn.ConvTranspose2d(c[1], c[0], 4, stride=2, padding=1), nn.ELU(),   # 64
        nn.ConvTranspose2d(c[0], 1, 4, stride=2, padding=1),               # 128
    )
    return encoder, decoder


def _conv_bn(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True)]


def _up_bn(cin: int, cout: int) -> list[nn.Module]:
    return [nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True)]


def _deep(latent_dim: int) -> tuple[nn.Module, nn.Module]:
    c = (16, 32, 64, 128, 256)
    side = GRID_SIZE // 32                        # 4
    flat = c[-1] * side * side                    # 4096
    enc: list[nn.Module] = []
    cin = 1
    for cout in c:                                # 128 → 64 → 32 → 16 → 8 → 4
        enc += _conv_bn(cin, cout, stride=2) + _conv_bn(cout, cout)
        cin = cout
    enc += [nn.Flatten(), nn.Linear(flat, latent_dim)]
    dec: list[nn.Module] = [nn.Linear(latent_dim, flat), nn.ReLU(inplace=True), nn.Unflatten(1, (c[-1], side, side))]
    rev = c[::-1]                                 # 256 128 64 32 16
    for cin, cout in zip(rev, rev[1:] + (c[0],)):  # 4 → 8 → 16 → 32 → 64 → 128
        dec += _up_bn(cin, cout) + _conv_bn(cout, cout)
    dec += [nn.Conv2d(c[0], 1, 3, padding=1)]
    return nn.Sequential(*enc), nn.Sequential(*dec)


_BUILDERS = {"shallow": _shallow, "deep": _deep}


def build_model(arch: str = "shallow", latent_dim: int = 128) -> AutoEncoder:
    """A freshly initialised auto-encoder (weights from torch's global RNG: seed it first).

    Parameters
    ----------
    arch : ``"shallow"`` or ``"deep"`` (see the module docstring).
    latent_dim : length of the feature vector (>= 1).
    """
    check_arch(arch)
    if int(latent_dim) < 1:
        raise ValueError(f"latent_dim must be >= 1, got {latent_dim}")
    encoder, decoder = _BUILDERS[arch](int(latent_dim))
    return AutoEncoder(arch, int(latent_dim), encoder, decoder)


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
