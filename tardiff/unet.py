"""Label-conditional 1-D U-Net that predicts the noise of a multivariate series.

The label embedding is added to the timestep embedding, so every residual block
receives both through a scale-and-shift of its normalised activations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass(frozen=True)
class UNetConfig:
    in_channels: int  # number of clinical channels of the series
    base_channels: int = 64
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attention_levels: tuple[int, ...] = (1, 2, 3)
    num_heads: int = 8
    dropout: float = 0.0
    num_classes: int = 2


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Return sinusoidal embeddings of integer timesteps, ``(batch,) -> (batch, dim)``."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float()[:, None] * freqs[None]
    embedding = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
    if dim % 2:
        embedding = F.pad(embedding, (0, 1))
    return embedding


def _group_norm(channels: int) -> nn.GroupNorm:
    groups = 8 if channels % 8 == 0 else 1
    return nn.GroupNorm(groups, channels)


class ResBlock(nn.Module):
    """Residual block whose second normalisation is modulated by the conditioning embedding."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float):
        super().__init__()
        self.norm1 = _group_norm(in_ch)
        self.conv1 = nn.Conv1d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * out_ch)  # scale and shift
        self.norm2 = _group_norm(out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv1d(out_ch, out_ch, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # the block starts as the identity
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv1d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(F.silu(emb)).unsqueeze(-1).chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Multi-head self-attention over the time axis with a residual connection."""

    def __init__(self, channels: int, num_heads: int):
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"channels ({channels}) must be divisible by num_heads ({num_heads})")
        self.norm = _group_norm(channels)
        self.attn = nn.MultiheadAttention(channels, num_heads, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x).transpose(1, 2)  # (batch, time, channels)
        h, _ = self.attn(h, h, h, need_weights=False)
        return x + h.transpose(1, 2)


class Level(nn.Module):
    """Residual blocks of one resolution, each optionally followed by self-attention."""

    def __init__(self, in_chs: list[int], out_ch: int, emb_dim: int, attention: bool, num_heads: int, dropout: float):
        super().__init__()
        self.blocks = nn.ModuleList(ResBlock(c, out_ch, emb_dim, dropout) for c in in_chs)
        self.attns = nn.ModuleList(
            SelfAttention(out_ch, num_heads) if attention else nn.Identity() for _ in in_chs
        )


class UNet1D(nn.Module):
    """1-D U-Net: ``forward(x (batch, channels, time), t (batch,), y (batch,)) -> eps``."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = config
        base = config.base_channels
        emb_dim = 4 * base
        self.time_mlp = nn.Sequential(nn.Linear(base, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.label_emb = nn.Embedding(config.num_classes, emb_dim)
        self.input_conv = nn.Conv1d(config.in_channels, base, 3, padding=1)

        # Encoder: remember each block's width for the decoder's skip connections.
        widths = [base]
        ch = base
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        last = len(config.channel_mult) - 1
        for level, mult in enumerate(config.channel_mult):
            out_ch = base * mult
            in_chs = [ch] + [out_ch] * (config.num_res_blocks - 1)
            attention = level in config.attention_levels
            self.down.append(Level(in_chs, out_ch, emb_dim, attention, config.num_heads, config.dropout))
            ch = out_ch
            widths += [ch] * config.num_res_blocks
            if level != last:
                self.downsample.append(nn.Conv1d(ch, ch, 3, stride=2, padding=1))
                widths.append(ch)

        self.mid_block1 = ResBlock(ch, ch, emb_dim, config.dropout)
        self.mid_attn = SelfAttention(ch, config.num_heads)
        self.mid_block2 = ResBlock(ch, ch, emb_dim, config.dropout)

        # Decoder: one more block per level than the encoder, each taking one skip.
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for level, mult in reversed(list(enumerate(config.channel_mult))):
            out_ch = base * mult
            in_chs = []
            for _ in range(config.num_res_blocks + 1):
                in_chs.append(ch + widths.pop())
                ch = out_ch
            attention = level in config.attention_levels
            self.up.append(Level(in_chs, out_ch, emb_dim, attention, config.num_heads, config.dropout))
            if level != 0:
                self.upsample.append(nn.Conv1d(ch, ch, 3, padding=1))

        self.out = nn.Sequential(_group_norm(ch), nn.SiLU(), nn.Conv1d(ch, config.in_channels, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        emb = self.time_mlp(timestep_embedding(t, self.config.base_channels)) + self.label_emb(y)

        h = self.input_conv(x)
        skips = [h]
        for level, stage in enumerate(self.down):
            for block, attn in zip(stage.blocks, stage.attns):
                h = attn(block(h, emb))
                skips.append(h)
            if level < len(self.downsample):
                h = self.downsample[level](h)
                skips.append(h)

        h = self.mid_block2(self.mid_attn(self.mid_block1(h, emb)), emb)

        for index, stage in enumerate(self.up):
            for block, attn in zip(stage.blocks, stage.attns):
                h = attn(block(torch.cat([h, skips.pop()], dim=1), emb))
            if index < len(self.upsample):
                h = self.upsample[index](F.interpolate(h, scale_factor=2, mode="nearest"))
        return self.out(h)
