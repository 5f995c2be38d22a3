"""Layers shared by the model zoo.

The one that matters is :class:`Normalize`: per-channel standardization lives
inside the model, so every model maps images in [0, 1] to logits, attacks and
threat models work in pixel space, and no data loader ever normalizes.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["Normalize", "channel_stats"]


def channel_stats(
    value: float | Sequence[float], num_channels: int, what: str = "value"
) -> tuple[float, ...]:
    """Expand a scalar or per-channel sequence to a tuple of ``num_channels`` floats.

    Args:
        value: A number (used for every channel) or one number per channel.
        num_channels: Number of input channels.
        what: Name used in error messages (e.g. ``"mean"``).

    Returns:
        Tuple of ``num_channels`` finite floats.

    Raises:
        ValueError: If the length does not match or a value is not finite.
        TypeError: If ``value`` is neither a number nor a sequence of numbers.
    """
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        values = (float(value),) * num_channels
    else:
        # Any iterable of numbers: tuple, list, numpy array, 1-d tensor.
        try:
            if isinstance(value, (str, bytes)):
                raise TypeError
            values = tuple(float(v) for v in value)  # type: ignore[union-attr]
        except (TypeError, ValueError) as e:
            raise TypeError(
                f"{what} must be a number or a sequence of numbers, got {value!r}"
            ) from e
        if len(values) != num_channels:
            raise ValueError(
                f"{what} has {len(values)} value(s) but the model has {num_channels} input "
                f"channel(s); pass {num_channels} value(s), one per channel"
            )
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"{what} must be finite, got {values}")
    return values


class Normalize(nn.Module):
    """Per-channel standardization ``(x - mean) / std`` as the first model layer.

    mean and std are stored as persistent buffers of shape ``(1, C, 1, 1)``, so
    they follow ``model.to(device)`` and are saved with the weights. The buffers
    are cast to the input's dtype, so a float64 input stays float64.

    Args:
        mean: Per-channel means (or one number for all channels), in pixel
            units of [0, 1] images.
        std: Per-channel standard deviations, all > 0.
        num_channels: Number of channels; defaults to ``len(mean)`` (1 if both
            mean and std are numbers).

    Raises:
        ValueError: If lengths disagree, a std is not > 0, or a value is not
            finite.

    Example:
        >>> norm = Normalize((0.1307,), (0.3081,))
        >>> norm(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 1, 28, 28])
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self,
        mean: float | Sequence[float],
        std: float | Sequence[float],
        num_channels: int | None = None,
    ) -> None:
        super().__init__()
        if num_channels is None:
            seqs = [v for v in (mean, std) if not isinstance(v, numbers.Real)]
            num_channels = len(seqs[0]) if seqs else 1  # type: ignore[arg-type]
        if not isinstance(num_channels, int) or num_channels < 1:
            raise ValueError(f"num_channels must be a positive int, got {num_channels!r}")
        mean_t = channel_stats(mean, num_channels, "mean")
        std_t = channel_stats(std, num_channels, "std")
        if any(s <= 0 for s in std_t):
            raise ValueError(f"std must be > 0 for every channel, got {std_t}")
        self.num_channels = num_channels
        self.register_buffer("mean", torch.tensor(mean_t, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std_t, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Standardize a batch.

        Args:
            x: Images ``(N, C, H, W)`` in [0, 1].

        Returns:
            ``(x - mean) / std``, same shape, dtype and device as ``x``.
        """
        if x.dim() != 4 or x.shape[1] != self.num_channels:
            raise ValueError(
                f"expected images of shape (N, {self.num_channels}, H, W), got {tuple(x.shape)}"
            )
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def extra_repr(self) -> str:
        mean = tuple(round(v, 4) for v in self.mean.flatten().tolist())
        std = tuple(round(v, 4) for v in self.std.flatten().tolist())
        return f"mean={mean}, std={std}"
