"""Cross-modal attention primitives of the fusions (timm-style, written from the paper)."""
from __future__ import annotations

import torch
from torch import nn


class Attention(nn.Module):
    """Queries from one modality attend over keys/values of the other.

    Returns (output (B, Nq, out_dim), attention map (B, heads, Nq, Nk)); softmax over keys.
    """

    def __init__(self, in_dim_k: int, in_dim_q: int, out_dim: int, num_heads: int = 1):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (out_dim // num_heads) ** -0.5
        self.q = nn.Linear(in_dim_q, out_dim, bias=False)
        self.kv = nn.Linear(in_dim_k, 2 * out_dim, bias=False)
        self.proj = nn.Linear(out_dim, out_dim)

    def forward(self, x_k: torch.Tensor, x_q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, nk, _ = x_k.shape
        nq = x_q.shape[1]
        h = self.num_heads
        q = self.q(x_q).reshape(b, nq, h, -1).transpose(1, 2)
        k, v = self.kv(x_k).reshape(b, nk, 2, h, -1).permute(2, 0, 3, 1, 4)
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(b, nq, -1)
        return self.proj(out), attn


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class AttentionBlock(nn.Module):
    """LayerNorms on both inputs, cross-attention, then x + MLP(LN(x)).

    As in the paper, the attention output replaces the query (no residual from the query input).
    """

    def __init__(self, in_dim_k: int, in_dim_q: int, out_dim: int, num_heads: int = 1, mlp_ratio: float = 2.0):
        super().__init__()
        self.norm1_q = nn.LayerNorm(in_dim_q)
        self.norm1_k = nn.LayerNorm(in_dim_k)
        self.attn = Attention(in_dim_k, in_dim_q, out_dim, num_heads)
        self.norm2 = nn.LayerNorm(out_dim)
        self.mlp = Mlp(out_dim, int(out_dim * mlp_ratio))

    def forward(self, x_k: torch.Tensor, x_q: torch.Tensor) -> torch.Tensor:
        x, _ = self.attn(self.norm1_k(x_k), self.norm1_q(x_q))
        return x + self.mlp(self.norm2(x))
