"""Bidirectional GRU classifier: the guidance model and the downstream evaluator.

The forward pass has two implementations over the same parameters. ``forward``
calls ``nn.GRU`` (fused kernels, cuDNN on a GPU) for training and evaluation.
``forward_unrolled`` writes the GRU cell out in elementary operations. Because
``torch.func`` can ``vmap`` those and differentiate them twice on any device,
influence scores and guidance gradients use it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn


@dataclass(frozen=True)
class GRUClassifierConfig:
    in_channels: int
    hidden_size: int = 256
    num_layers: int = 2
    dropout: float = 0.2


class GRUClassifier(nn.Module):
    """Bidirectional GRU over ``(batch, time, channels)`` returning one logit per series.

    The head reads the final hidden state of each direction. The released TarDiff
    code reads the last time step's output instead, where the backward direction
    has seen a single step. The final states summarise the whole series in both
    directions.
    """

    def __init__(self, config: GRUClassifierConfig):
        super().__init__()
        self.config = config
        self.gru = nn.GRU(
            config.in_channels,
            config.hidden_size,
            num_layers=config.num_layers,
            batch_first=True,
            bidirectional=True,
            dropout=config.dropout if config.num_layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(2 * config.hidden_size, 1)

    def forward(self, x: torch.Tensor, unrolled: bool = False) -> torch.Tensor:
        """Return logits ``(batch,)`` for series ``x`` of shape ``(batch, time, channels)``.

        ``unrolled=True`` runs :meth:`forward_unrolled`, so ``torch.func.functional_call`` can reach it.
        """
        if unrolled:
            return self.forward_unrolled(x)
        _, h_n = self.gru(x)  # (num_layers * 2, batch, hidden)
        final = torch.cat([h_n[-2], h_n[-1]], dim=-1)
        return self.head(self.dropout(final)).squeeze(-1)

    def features_unrolled(self, x: torch.Tensor) -> torch.Tensor:
        """Return the head's input ``(batch, 2 * hidden)``: the final state of each direction, eval mode."""
        layer_input = x
        finals: list[torch.Tensor] = []
        for layer in range(self.config.num_layers):
            outputs = []
            for suffix, reverse in (("", False), ("_reverse", True)):
                weights = [getattr(self.gru, f"{name}_l{layer}{suffix}") for name in
                           ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
                sequence, h_last = _gru_direction(layer_input, *weights, reverse=reverse)
                outputs.append(sequence)
                finals.append(h_last)
            layer_input = torch.cat(outputs, dim=-1)
        return torch.cat(finals[-2:], dim=-1)

    def forward_unrolled(self, x: torch.Tensor) -> torch.Tensor:
        """Compute the same logits as ``forward`` in eval mode, with the GRU cell written out.

        Dropout is not applied: guidance and influence always use the trained model
        deterministically.
        """
        return self.head(self.features_unrolled(x)).squeeze(-1)


def _gru_direction(
    x: torch.Tensor,
    weight_ih: torch.Tensor,
    weight_hh: torch.Tensor,
    bias_ih: torch.Tensor,
    bias_hh: torch.Tensor,
    reverse: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run one GRU direction with PyTorch's gate equations (reset, update, new).

    Returns the outputs ``(batch, time, hidden)`` in time order and the final state.
    """
    hidden = weight_hh.shape[1]
    h = x.new_zeros(x.shape[0], hidden)
    input_gates = x @ weight_ih.T + bias_ih  # all time steps at once: (batch, time, 3 * hidden)
    steps = range(x.shape[1] - 1, -1, -1) if reverse else range(x.shape[1])
    outputs = [None] * x.shape[1]
    for step in steps:
        i_r, i_z, i_n = input_gates[:, step].chunk(3, dim=-1)
        h_r, h_z, h_n = (h @ weight_hh.T + bias_hh).chunk(3, dim=-1)
        reset = torch.sigmoid(i_r + h_r)
        update = torch.sigmoid(i_z + h_z)
        candidate = torch.tanh(i_n + reset * h_n)
        h = (1 - update) * candidate + update * h
        outputs[step] = h
    return torch.stack(outputs, dim=1), h
