"""TimesNet for binary classification of multivariate series.

Wu H., Hu T., Liu Y., Zhou H., Wang J., Long M. "TimesNet: Temporal 2D-Variation
Modeling for General Time Series Analysis", ICLR 2023.

The model embeds each time step, then stacks TimesBlocks. A TimesBlock finds the
``top_k`` dominant periods of its input with an FFT. For each period it folds the
1-D series into a 2-D grid (rows are cycles, columns are phases within a cycle),
applies an Inception block of 2-D convolutions and unfolds the result. The
``top_k`` branches are summed with softmax weights of their spectral amplitudes,
plus a residual.
The classification head follows the paper's classification setting: GELU,
dropout, flatten over time and a linear layer.

Two deliberate differences from the authors' released library:

- Periods are chosen per series, as the paper's equation states (the amplitude
  spectrum of one series averaged over its channels). The library picks them from
  the amplitude averaged over the whole batch, so a prediction there depends on
  which other series share its batch; here it does not.
- One logit with binary cross-entropy replaces two logits with cross-entropy;
  for two classes both parametrise the same family of classifiers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class TimesNetConfig:
    in_channels: int
    seq_len: int
    d_model: int = 16
    d_ff: int = 16
    top_k: int = 2
    num_kernels: int = 3  # Inception kernels of sizes 1, 3, ..., 2 * num_kernels - 1
    e_layers: int = 2
    dropout: float = 0.1


def dominant_periods(x: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the ``top_k`` periods of each series in ``x (batch, time, channels)`` and their amplitudes.

    The amplitude spectrum of the real FFT over time is averaged over channels; the
    zero frequency (the mean) is excluded. Frequency ``f`` maps to period ``time // f``.
    Returns ``periods`` (batch, top_k) as integers and ``amplitudes`` (batch, top_k),
    which stay differentiable because they weight the branches.
    """
    length = x.shape[1]
    if not 1 <= top_k <= length // 2:
        raise ValueError(f"top_k={top_k} must be between 1 and time // 2 = {length // 2} for series of length {length}")
    spectrum = torch.fft.rfft(x, dim=1).abs().mean(dim=-1)  # (batch, length // 2 + 1)
    amplitudes, index = torch.topk(spectrum[:, 1:], top_k, dim=1)
    frequencies = index + 1
    return torch.div(length, frequencies, rounding_mode="floor"), amplitudes


class InceptionBlock(nn.Module):
    """Mean of parallel 2-D convolutions with square kernels of sizes 1, 3, ..., 2 * num_kernels - 1.

    Each kernel keeps its own parameters, but the forward pass runs one convolution:
    with "same" padding, the mean of the branches equals a single convolution by the
    mean of the kernels zero-padded to the largest size. The function and its
    parameter gradients are unchanged; the CPU cost drops several-fold because
    small 2-D convolutions are dominated by per-call overhead.
    """

    def __init__(self, in_channels: int, out_channels: int, num_kernels: int):
        super().__init__()
        self.num_kernels = num_kernels
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for i in range(num_kernels):
            size = 2 * i + 1
            weight = torch.empty(out_channels, in_channels, size, size)
            nn.init.kaiming_normal_(weight, mode="fan_out", nonlinearity="relu")
            self.weights.append(nn.Parameter(weight))
            self.biases.append(nn.Parameter(torch.zeros(out_channels)))

    def merged_kernel(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the weight ``(out, in, 2K - 1, 2K - 1)`` and bias ``(out,)`` of the equivalent single convolution."""
        largest = self.num_kernels - 1
        padded = [F.pad(weight, (largest - i,) * 4) for i, weight in enumerate(self.weights)]
        return torch.stack(padded).mean(dim=0), torch.stack(list(self.biases)).mean(dim=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.merged_kernel()
        return F.conv2d(x, weight, bias, padding=self.num_kernels - 1)


class TimesBlock(nn.Module):
    """One TimesBlock: per-period 2-D convolution of ``(batch, time, d_model)``, amplitude-weighted, residual."""

    def __init__(self, config: TimesNetConfig):
        super().__init__()
        self.top_k = config.top_k
        # The same two Inception blocks serve every period, as in the paper's parameter-efficient design.
        self.inception = nn.Sequential(
            InceptionBlock(config.d_model, config.d_ff, config.num_kernels),
            nn.GELU(),
            InceptionBlock(config.d_ff, config.d_model, config.num_kernels),
        )

    def _fold_convolve_unfold(self, x: torch.Tensor, period: int) -> torch.Tensor:
        """Fold ``x (n, time, d_model)`` into cycles of ``period`` steps, convolve in 2-D, unfold to ``(n, time, d_model)``."""
        n, length, width = x.shape
        cycles = math.ceil(length / period)
        padded = F.pad(x, (0, 0, 0, cycles * period - length))  # zeros appended in time
        grid = padded.reshape(n, cycles, period, width).permute(0, 3, 1, 2)  # (n, d_model, cycles, period)
        out = self.inception(grid)
        return out.permute(0, 2, 3, 1).reshape(n, cycles * period, width)[:, :length]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        periods, amplitudes = dominant_periods(x, self.top_k)

        # Series that share a period at any rank are convolved together, so each distinct period costs one pass.
        branches = x.new_zeros(batch, self.top_k, length, width)
        for period in torch.unique(periods).tolist():
            rows, ranks = torch.nonzero(periods == period, as_tuple=True)
            branches = branches.index_put((rows, ranks), self._fold_convolve_unfold(x[rows], period))

        weights = torch.softmax(amplitudes, dim=1)  # (batch, top_k)
        return x + (branches * weights[:, :, None, None]).sum(dim=1)


def sinusoidal_positions(length: int, width: int) -> torch.Tensor:
    """Return the fixed sine-cosine position encoding ``(length, width)`` of the Transformer."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    rates = torch.exp(torch.arange(0, width, 2, dtype=torch.float32) * (-math.log(10000.0) / width))
    table = torch.zeros(length, width)
    table[:, 0::2] = torch.sin(position * rates)
    table[:, 1::2] = torch.cos(position * rates[: width // 2])
    return table


class TimesNetClassifier(nn.Module):
    """TimesNet over ``(batch, time, channels)`` returning one logit per series."""

    def __init__(self, config: TimesNetConfig):
        super().__init__()
        self.config = config
        # Token embedding: a width-3 convolution over time with circular padding and no bias.
        self.token_embedding = nn.Conv1d(
            config.in_channels, config.d_model, kernel_size=3, padding=1, padding_mode="circular", bias=False
        )
        nn.init.kaiming_normal_(self.token_embedding.weight, mode="fan_in", nonlinearity="leaky_relu")
        self.register_buffer("positions", sinusoidal_positions(config.seq_len, config.d_model), persistent=False)
        self.embedding_dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(TimesBlock(config) for _ in range(config.e_layers))
        self.norm = nn.LayerNorm(config.d_model)  # shared by all blocks, as in the authors' library
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.seq_len * config.d_model, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits ``(batch,)`` for series ``x`` of shape ``(batch, seq_len, in_channels)``."""
        if x.dim() != 3 or x.shape[1:] != (self.config.seq_len, self.config.in_channels):
            raise ValueError(
                f"TimesNet expects (batch, {self.config.seq_len}, {self.config.in_channels}), got {tuple(x.shape)}"
            )
        h = self.token_embedding(x.transpose(1, 2)).transpose(1, 2) + self.positions
        h = self.embedding_dropout(h)
        for block in self.blocks:
            h = self.norm(block(h))
        h = self.dropout(F.gelu(h))
        return self.head(h.flatten(start_dim=1)).squeeze(-1)
