"""Constructed defenses: wrappers that give a model the failure modes of known broken defenses.

Each wrapper changes only the input or the output of a model, so its robustness is at most the
base model's; an evaluation that reports more has been fooled. They reproduce the categories of
Athalye, Carlini & Wagner 2018 ("Obfuscated Gradients Give a False Sense of Security") and the
checks of AutoAttack (Croce & Hein 2020):

==============  ==================================================================================
``quantize``    input quantization to ``levels`` grey levels (bit-depth reduction); the rounding
                has zero gradient almost everywhere
``jpeg``        JPEG-like compression: 8x8 block DCT, coefficients rounded to a step that grows with
                frequency, inverse DCT (a non-differentiable preprocessing: shattered gradients)
``saturate``    the logits times ``scale`` (1000): the softmax saturates and the cross-entropy's
                gradient underflows to zero on confidently classified points
``noise``       Gaussian noise of std ``sigma`` added to the input at every call (a randomized model)
``softmax``     probabilities instead of logits
==============  ==================================================================================

A wrapper keeps the base model's ``config`` (so checkpoints and shape checks see the base) and
describes itself with :meth:`Defense.spec`, the dict that :func:`wrap` takes back; a run folder
whose ``run.json`` holds such a dict under ``"defense"`` is loaded wrapped (``ro.load_run``).

Example:
    >>> model = wrap(ro.models.create("small-cnn"), {"kind": "quantize", "levels": 16})
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import nn

__all__ = ["Defense", "Quantize", "JPEGLike", "Saturate", "GaussianNoise", "Softmax", "DEFENSES", "wrap"]


class Defense(nn.Module):
    """A model wrapped by a constructed defense; ``self.model`` is the base model."""

    kind: ClassVar[str] = ""

    def __init__(self, model: nn.Module) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"a defense wraps a torch.nn.Module, got {type(model).__name__}.")
        super().__init__()
        self.model = model
        self.config = getattr(model, "config", None)

    def spec(self) -> dict[str, Any]:
        """The defense as a JSON-ready dict, ``{"kind": ..., **parameters}``; ``wrap(base, spec)`` rebuilds it."""
        return {"kind": self.kind, **self._params()}

    def _params(self) -> dict[str, Any]:
        return {}

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self._params().items())


class Quantize(Defense):
    """Input quantization: ``x -> round(x * (levels - 1)) / (levels - 1)`` before the base model.

    Inputs in the same bin give the same output, and the input gradient is zero almost everywhere.

    Args:
        model: the base model (images in [0, 1] -> logits).
        levels: number of grey levels, >= 2 (2: binarization at 0.5).
    """

    kind = "quantize"

    def __init__(self, model: nn.Module, levels: int = 16) -> None:
        super().__init__(model)
        if isinstance(levels, bool) or not isinstance(levels, int) or levels < 2:
            raise ValueError(f"levels must be an integer >= 2 (2 = binarization), got {levels!r}.")
        self.levels = levels

    def _params(self) -> dict[str, Any]:
        return {"levels": self.levels}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(torch.round(x * (self.levels - 1)) / (self.levels - 1))


class JPEGLike(Defense):
    """JPEG-like compression before the base model: shattered (zero) input gradients.

    Each channel is cut into 8x8 blocks (zero-padded to a multiple of 8), transformed with the
    orthonormal 2-D DCT-II, each coefficient ``(u, v)`` rounded to a multiple of
    ``quality_step * (1 + u + v)``, transformed back and clipped to [0, 1].

    Args:
        model: the base model.
        quality_step: rounding step of the DC coefficient, > 0; larger is coarser.
    """

    kind = "jpeg"
    block = 8

    def __init__(self, model: nn.Module, quality_step: float = 0.1) -> None:
        super().__init__(model)
        if not (isinstance(quality_step, (int, float)) and math.isfinite(quality_step) and quality_step > 0):
            raise ValueError(f"quality_step must be a positive number, got {quality_step!r}.")
        self.quality_step = float(quality_step)
        k = torch.arange(self.block, dtype=torch.float64)
        dct = torch.cos(math.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * self.block)) * math.sqrt(2 / self.block)
        dct[0] /= math.sqrt(2)
        self.register_buffer("dct", dct.float(), persistent=False)
        self.register_buffer("steps", (quality_step * (1 + k[:, None] + k[None, :])).float(), persistent=False)

    def _params(self) -> dict[str, Any]:
        return {"quality_step": self.quality_step}

    def compress(self, x: torch.Tensor) -> torch.Tensor:
        """The compressed images, same shape as ``x`` (N, C, H, W)."""
        n, c, h, w = x.shape
        b = self.block
        ph, pw = -h % b, -w % b
        padded = nn.functional.pad(x, (0, pw, 0, ph))
        blocks = padded.unfold(2, b, b).unfold(3, b, b)  # N, C, H/b, W/b, b, b
        dct, steps = self.dct.to(x), self.steps.to(x)
        coef = dct @ blocks @ dct.T
        coef = torch.round(coef / steps) * steps
        blocks = dct.T @ coef @ dct
        out = blocks.permute(0, 1, 2, 4, 3, 5).reshape(n, c, h + ph, w + pw)
        return out[:, :, :h, :w].clamp(0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.compress(x))


class Saturate(Defense):
    """The base model's logits times ``scale``: same predictions, saturated softmax.

    Args:
        model: the base model.
        scale: factor on the logits, > 0 (1000 saturates the softmax of any confident prediction).
    """

    kind = "saturate"

    def __init__(self, model: nn.Module, scale: float = 1000.0) -> None:
        super().__init__(model)
        if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be a positive number, got {scale!r}.")
        self.scale = float(scale)

    def _params(self) -> dict[str, Any]:
        return {"scale": self.scale}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) * self.scale


class GaussianNoise(Defense):
    """A randomized model: ``base(clip(x + sigma * noise, 0, 1))`` with fresh noise at every call.

    Args:
        model: the base model.
        sigma: standard deviation of the noise in pixel units, > 0.
        generator: the random stream of the noise (default: torch's global one).
    """

    kind = "noise"

    def __init__(self, model: nn.Module, sigma: float = 0.1, generator: torch.Generator | None = None) -> None:
        super().__init__(model)
        if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
            raise ValueError(f"sigma must be a positive number, got {sigma!r}.")
        self.sigma = float(sigma)
        self.generator = generator

    def _params(self) -> dict[str, Any]:
        return {"sigma": self.sigma}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        noise = torch.randn(x.shape, generator=self.generator, dtype=x.dtype,
                            device=x.device if self.generator is None else self.generator.device).to(x.device)
        return self.model((x + self.sigma * noise).clamp(0, 1))


class Softmax(Defense):
    """The base model's probabilities (softmax of its logits) instead of its logits."""

    kind = "softmax"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(x), dim=1)


DEFENSES: dict[str, type[Defense]] = {cls.kind: cls for cls in (Quantize, JPEGLike, Saturate, GaussianNoise, Softmax)}


def wrap(model: nn.Module, spec: Mapping[str, Any]) -> Defense:
    """Wrap ``model`` in the defense that ``spec`` describes (``Defense.spec``'s dict).

    Args:
        model: the base model.
        spec: ``{"kind": NAME, **parameters}`` with NAME in :data:`DEFENSES`.

    Raises:
        ValueError: unknown kind or bad parameters. TypeError: ``spec`` is not a mapping.
    """
    if not isinstance(spec, Mapping):
        raise TypeError(f"a defense spec is a dict such as {{'kind': 'quantize', 'levels': 16}}, got {spec!r}.")
    params = dict(spec)
    kind = params.pop("kind", None)
    if kind not in DEFENSES:
        raise ValueError(f"unknown defense kind {kind!r}; use one of {', '.join(sorted(DEFENSES))}.")
    try:
        return DEFENSES[kind](model, **params)
    except TypeError as err:
        raise ValueError(f"bad parameters for the {kind} defense {params}: {err}.") from None
