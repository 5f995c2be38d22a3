"""Purpose-built gradient-masking models for the audit tests.

Each wraps one small base classifier (a CNN trained for about a second on
synthetic 1x8x8 "digits": a fixed prototype per class plus noise) and breaks
gradient-based attacks in one of the classic ways (Athalye et al. 2018,
"Obfuscated Gradients Give a False Sense of Security"):

* ``Quantized``: non-differentiable input quantization, ``round(x * k) / k``;
  ``torch.round`` has gradient 0, so the input gradient is exactly zero.
* ``SoftmaxOutput``: returns ``softmax(T * logits)`` with a large T: the outputs are
  probabilities and their gradients vanish (saturated softmax).
* ``NoisyInput``: adds fresh Gaussian noise to the input at every forward (randomized defense).
* ``Shattered``: preprocessing ``x + (a / w) sin(w x)``: the function barely changes
  (at most ``a / w`` per pixel) but its derivative ``1 + a cos(w x)`` is huge and
  oscillates, so the input gradient points in an essentially random direction.
* ``ScaledLogits``: logits times 1000: the softmax saturates and the CE gradient vanishes.
* ``fgsm_overfit_model()``: the base architecture trained with FGSM until it overfits
  catastrophically (robust to FGSM, not to PGD).

None of them is actually robust: an attack that does not follow their gradients
(transfer from the base model, or a score-based attack) breaks them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import nn

SHAPE = (1, 8, 8)
CLASSES = 4


def prototype_data(n: int, seed: int | torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` synthetic 1x8x8 images in [0, 1] (class prototype + Gaussian noise) and labels in [0, 4).

    ``seed``: an int, or a generator to draw from (several sets from one stream).
    """
    g = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(seed)
    protos = torch.rand(CLASSES, *SHAPE, generator=torch.Generator().manual_seed(123)) * 0.6 + 0.2
    y = torch.randint(0, CLASSES, (n,), generator=g)
    x = (protos[y] + 0.25 * torch.randn(n, *SHAPE, generator=g)).clamp(0, 1)
    return x, y


Adversary = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def train_base(x: torch.Tensor, y: torch.Tensor, g: torch.Generator, steps: int,
               adversary: Adversary | None = None) -> nn.Sequential:
    """The base architecture (from ``torch.manual_seed(0)``) after ``steps`` Adam steps (lr 3e-3) on
    batches of 128 drawn from ``(x, y)`` with ``g``, each on the batch itself or on the points
    ``adversary(model, x, y)`` makes of it. Returned in train mode, with parameter gradients."""
    torch.manual_seed(0)
    model = _architecture()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (128,), generator=g)
        xb, yb = x[idx], y[idx]
        if adversary is not None:
            xb = adversary(model, xb, yb)
        loss = nn.functional.cross_entropy(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def _fit(adversary: Adversary | None = None) -> dict[str, torch.Tensor]:
    """The weights of the base architecture after 300 (with an ``adversary``: 400) steps on prototype data."""
    x, y = prototype_data(4000, seed=1)
    model = train_base(x, y, torch.Generator().manual_seed(2), 300 if adversary is None else 400, adversary)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@functools.lru_cache(maxsize=None)
def _trained_state() -> dict[str, torch.Tensor]:
    return _fit()


def _architecture() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(16 * 4 * 4, CLASSES),
    )


def base_model() -> nn.Sequential:
    """A fresh copy of the naturally trained base CNN (about 99% clean accuracy), in eval mode."""
    model = _architecture()
    model.load_state_dict(_trained_state())
    return model.eval()


class Quantized(nn.Module):
    """(a) ``base(round(x * levels) / levels)``: zero input gradient everywhere."""

    def __init__(self, base: nn.Module, levels: int = 255) -> None:
        super().__init__()
        self.base, self.levels = base, levels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(torch.round(x * self.levels) / self.levels)


class SoftmaxOutput(nn.Module):
    """(b) ``softmax(temperature * base(x))``: probabilities out, saturated, vanishing gradients."""

    def __init__(self, base: nn.Module, temperature: float = 1000.0) -> None:
        super().__init__()
        self.base, self.temperature = base, temperature

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.temperature * self.base(x), dim=1)


class NoisyInput(nn.Module):
    """(c) ``base(x + sigma * noise)`` with fresh noise at every call, in eval mode too."""

    def __init__(self, base: nn.Module, sigma: float = 0.1, seed: int = 0) -> None:
        super().__init__()
        self.base, self.sigma = base, sigma
        self.generator = torch.Generator().manual_seed(seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        noise = torch.randn(x.shape, generator=self.generator, dtype=x.dtype).to(x.device)
        return self.base(x + self.sigma * noise)


class Shattered(nn.Module):
    """(d) ``base(x + (amplitude / frequency) * sin(frequency * x))``: high-frequency preprocessing.

    The input moves by at most ``amplitude / frequency`` (0.05 by default) per pixel, but
    the derivative ``1 + amplitude * cos(frequency * x)`` swings between about -49 and 51.
    """

    def __init__(self, base: nn.Module, amplitude: float = 50.0, frequency: float = 1000.0) -> None:
        super().__init__()
        self.base, self.amplitude, self.frequency = base, amplitude, frequency

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x + (self.amplitude / self.frequency) * torch.sin(self.frequency * x))


class ScaledLogits(nn.Module):
    """(e) ``scale * base(x)``: logits scaled up (1000x), as in defensive distillation at test time.

    The softmax saturates to exactly 0 and 1 in float32, so the cross-entropy gradient vanishes
    (CE attacks are fooled) while every scale-invariant attack (DLR, the CW margin, Square's
    margin, FAB's hyperplanes) sees the base model.
    """

    def __init__(self, base: nn.Module, scale: float = 1000.0) -> None:
        super().__init__()
        self.base, self.scale = base, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * self.base(x)


FGSM_EPS = 0.25  # the radius the FGSM model below was trained (and overfitted) at


def _fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """One FGSM step of size ``FGSM_EPS`` from the clean point (no random start)."""
    delta = torch.zeros_like(x, requires_grad=True)
    (grad,) = torch.autograd.grad(nn.functional.cross_entropy(model(x + delta), y), delta)
    return (x + FGSM_EPS * grad.sign()).clamp(0, 1)


@functools.lru_cache(maxsize=None)
def _fgsm_state() -> dict[str, torch.Tensor]:
    return _fit(_fgsm)


def fgsm_overfit_model() -> nn.Sequential:
    """(f) The base CNN trained with FGSM at eps 0.25 (no random start, step = eps), which overfits
    catastrophically: at ``Linf(FGSM_EPS)`` FGSM leaves about 44% of 300 test points accurate,
    PGD-20 and every suite 0% (about 12 s of training, once per session)."""
    model = _architecture()
    model.load_state_dict(_fgsm_state())
    return model.eval()
