"""The three networks of PPRL-VGAN, exactly as Table 1 of the paper.

All convolutions are 5x5. The encoder and the discriminator trunk halve the resolution four
times (so `image_size` must be a multiple of 16); the decoder starts from a
(image_size/16)^2 x 4w map (4x4x128 at 64 px, width w = 32 as in the paper) and doubles it four
times. Batch normalisation follows every (de)convolution except the decoder's last one, and every
LeakyReLU has slope 0.2 (paper §5.2). Weights are drawn from N(0, 0.01^2) (§5.2).

Beyond the paper (options of conf/model/, off in model=paper): the decoder can upsample by resize + convolution
instead of transposed convolutions (`upsample=resize`), and the discriminator's layers can carry spectral
normalisation (`spectral_norm`, `spectral_normalize`).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

LEAKY_SLOPE = 0.2
KERNEL = 5
NUM_DOWNSAMPLINGS = 4


def check_image_size(image_size: int) -> None:
    """Raise a ValueError unless `image_size` is a positive multiple of 16 (four stride-2 stages)."""
    if not isinstance(image_size, int) or image_size < 16 or image_size % 16:
        raise ValueError(
            f"dataset.image_size must be a positive multiple of 16 (16, 32, 48, 64, ...), got {image_size!r}"
        )


def _down_block(in_ch: int, out_ch: int) -> nn.Sequential:
    """5x5 stride-2 conv, BNorm, LeakyReLU (Table 1, encoder and discriminator rows 1-4)."""
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, KERNEL, stride=2, padding=KERNEL // 2, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.LeakyReLU(LEAKY_SLOPE),
    )


UPSAMPLING = ("transposed", "resize")


def _upsample_conv(in_ch: int, out_ch: int, upsample: str, bias: bool) -> nn.Module:
    """Double the resolution with a 5x5 convolution: a stride-2 transposed convolution (`transposed`, Table 1)
    or a nearest-neighbour 2x resize followed by a 5x5 convolution (`resize`: no checkerboard artefacts,
    Odena et al. 2016)."""
    if upsample == "transposed":
        return nn.ConvTranspose2d(in_ch, out_ch, KERNEL, stride=2, padding=2, output_padding=1, bias=bias)
    if upsample == "resize":
        return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                             nn.Conv2d(in_ch, out_ch, KERNEL, padding=KERNEL // 2, bias=bias))
    raise ValueError(f"model.upsample={upsample!r}: allowed values are {', '.join(UPSAMPLING)}")


def _up_block(in_ch: int, out_ch: int, upsample: str = "transposed") -> nn.Sequential:
    """Upsampling 5x5 conv, BNorm, LeakyReLU (Table 1, decoder rows 2-4)."""
    return nn.Sequential(_upsample_conv(in_ch, out_ch, upsample, bias=False), nn.BatchNorm2d(out_ch),
                         nn.LeakyReLU(LEAKY_SLOPE))


def _conv_trunk(width: int) -> nn.Sequential:
    """Rows 1-4 of the encoder/discriminator column: w, 2w, 4w, 8w channels, each halving the size."""
    channels = [3, width, 2 * width, 4 * width, 8 * width]
    return nn.Sequential(*(_down_block(a, b) for a, b in zip(channels[:-1], channels[1:])))


def init_weights(module: nn.Module, std: float = 0.01) -> None:
    """Zero-mean Gaussian weights with a small standard deviation (paper §5.2), zero biases."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class Encoder(nn.Module):
    """Image -> (mu, log sigma^2) of the Gaussian q(f(I) | I) (Table 1, encoder column)."""

    def __init__(self, image_size: int = 64, width: int = 32, latent_dim: int = 128):
        super().__init__()
        check_image_size(image_size)
        self.trunk = _conv_trunk(width)
        flat = 8 * width * (image_size // 16) ** 2
        self.mu = nn.Linear(flat, latent_dim)
        self.logvar = nn.Linear(flat, latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(x).flatten(1)
        return self.mu(h), self.logvar(h)


class Decoder(nn.Module):
    """(f(I) concatenated with the one-hot identity code c) -> image in [-1, 1] (Table 1, decoder column)."""

    def __init__(self, image_size: int = 64, width: int = 32, latent_dim: int = 128, num_identities: int = 6,
                 upsample: str = "transposed"):
        super().__init__()
        check_image_size(image_size)
        self.num_identities = num_identities
        self.start = image_size // 16
        self.start_channels = 4 * width  # 4x4x128 at 64 px and width 32
        self.fc = nn.Linear(latent_dim + num_identities, self.start_channels * self.start**2)
        self.up = nn.Sequential(
            _up_block(4 * width, 8 * width, upsample),
            _up_block(8 * width, 4 * width, upsample),
            _up_block(4 * width, 2 * width, upsample),
            _upsample_conv(2 * width, 3, upsample, bias=True),
            nn.Tanh(),
        )

    def forward(self, f: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
        """`identity` is either class indices (B,) or a one-hot/soft code (B, N_id)."""
        code = F.one_hot(identity, self.num_identities).to(f.dtype) if identity.dim() == 1 else identity.to(f.dtype)
        h = F.leaky_relu(self.fc(torch.cat([f, code], dim=1)), LEAKY_SLOPE)
        return self.up(h.view(-1, self.start_channels, self.start, self.start))


class Discriminator(nn.Module):
    """Shared trunk (4 convs + FC 256) with three heads: D1 real/fake, D2 identity, D3 expression (Table 1).

    Returns logits: D1 (B,), D2 (B, N_id), D3 (B, N_e).
    """

    def __init__(self, image_size: int = 64, width: int = 32, num_identities: int = 6, num_expressions: int = 7,
                 hidden: int = 256):
        super().__init__()
        check_image_size(image_size)
        self.trunk = nn.Sequential(
            _conv_trunk(width),
            nn.Flatten(),
            nn.Linear(8 * width * (image_size // 16) ** 2, hidden),
            nn.LeakyReLU(LEAKY_SLOPE),
        )
        self.real_fake = nn.Linear(hidden, 1)
        self.identity = nn.Linear(hidden, num_identities)
        self.expression = nn.Linear(hidden, num_expressions)

    def heads(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """D1, D2, D3 logits from the trunk's features h (B, hidden)."""
        return self.real_fake(h).squeeze(1), self.identity(h), self.expression(h)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.heads(self.trunk(x))


class LatentClassifier(nn.Module):
    """MLP on a latent vector f(I): `hidden` LeakyReLU layers then a linear head (attack III uses 3 x 256, §5.4)."""

    def __init__(self, latent_dim: int, num_classes: int, hidden: tuple[int, ...] = (256, 256, 256)):
        super().__init__()
        layers: list[nn.Module] = []
        prev = latent_dim
        for h in hidden:
            layers += [nn.Linear(prev, h), nn.LeakyReLU(LEAKY_SLOPE)]
            prev = h
        layers.append(nn.Linear(prev, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.net(f)


def spectral_normalize(module: nn.Module) -> nn.Module:
    """Spectral normalisation (Miyato et al. 2018) on every conv and linear layer of `module`, in place."""
    from torch.nn.utils.parametrizations import spectral_norm

    for name, child in list(module.named_children()):
        if isinstance(child, (nn.Conv2d, nn.Linear)):
            setattr(module, name, spectral_norm(child))
        else:
            spectral_normalize(child)
    return module


DIFF_AUGMENT = ("color", "translation")


def diff_augment(x: torch.Tensor, policy, generator: torch.Generator | None = None) -> torch.Tensor:
    """Differentiable augmentation (DiffAugment, Zhao et al. 2020) of a batch in [-1, 1]: what D sees of real
    *and* synthesized images in both D and G steps, so that D cannot memorise the small training set and G
    cannot win by pixel patterns that only fool D's heads. `color`: random brightness, saturation and contrast
    per image; `translation`: a random shift of up to 1/8 of the size per image, zero-padded."""
    b = x.shape[0]

    def uniform(*shape) -> torch.Tensor:  # drawn in float32 whatever x is (bf16 under autocast)
        return torch.rand(*shape, generator=generator, device=x.device, dtype=torch.float32)

    for kind in policy:
        if kind == "color":
            x = x + (uniform(b, 1, 1, 1) - 0.5).to(x.dtype)
            mean = x.mean(dim=1, keepdim=True)
            x = (x - mean) * (uniform(b, 1, 1, 1) * 2).to(x.dtype) + mean
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            x = (x - mean) * (uniform(b, 1, 1, 1) + 0.5).to(x.dtype) + mean
        elif kind == "translation":
            h, w = x.shape[2:]
            shift = max(1, int(h * 0.125 + 0.5))
            dy = (uniform(b) * (2 * shift + 1)).long() - shift
            dx = (uniform(b) * (2 * shift + 1)).long() - shift
            rows = (torch.arange(h, device=x.device).view(1, h, 1) + dy.view(b, 1, 1)).clamp(-1, h)
            cols = (torch.arange(w, device=x.device).view(1, 1, w) + dx.view(b, 1, 1)).clamp(-1, w)
            padded = F.pad(x, (1, 1, 1, 1))  # index -1 / h land on the zero border
            flat = (rows + 1) * (w + 2) + (cols + 1)
            x = padded.flatten(2).gather(2, flat.flatten(1).unsqueeze(1).expand(-1, x.shape[1], -1)).view_as(x)
        else:
            raise ValueError(f"model.diff_augment: unknown kind {kind!r}; allowed: {', '.join(DIFF_AUGMENT)}")
    return x
