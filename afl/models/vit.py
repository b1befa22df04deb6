"""A small Vision Transformer: LayerNorm only, so no layer keeps running statistics."""

from __future__ import annotations

import math

import torch
from torch import nn

from afl.models import MODELS
from afl.registry import require


class Attention(nn.Module):
    """Multi-head self-attention in plain tensor operations: linear queries, keys and values,
    ``softmax(q kᵀ / sqrt(d_head)) v`` per head, and an output projection. No fused or module-level
    attention (``nn.MultiheadAttention``), so that ``torch.func.functional_call`` under ``vmap`` (the cohort
    executor's stacked clients) runs it like any linear layer.

    The keys have no bias: a bias ``b`` adds ``q · b`` to every logit of a query alike, which the softmax
    takes away, so its gradient is zero but for rounding, and Adam, which divides a gradient by its own
    size, would make steps of full size out of that rounding: a parameter that wanders without changing
    the output, differently under each executor's rounding.
    """

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.scale = 1.0 / math.sqrt(dim // heads)
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim, bias=False)
        self.value = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:  # [b, n, d] → [b, heads, n, d_head]
            return t.reshape(b, n, self.heads, d // self.heads).transpose(1, 2)

        q, k, v = split(self.query(x) * self.scale), split(self.key(x)), split(self.value(x))
        weights = torch.softmax(q @ k.transpose(-2, -1), dim=-1)
        return self.proj((weights @ v).transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """A pre-norm transformer block: ``x + attn(LN(x))``, then ``x + MLP(LN(x))`` (linear, GELU, linear)."""

    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


@MODELS.register("vit")
class ViT(nn.Module):
    """A small Vision Transformer: non-overlapping ``patch_size``×``patch_size`` patches embedded by a
    strided convolution, a learned class token and learned position embeddings, ``depth`` pre-norm
    :class:`Block` s of ``heads``-head self-attention and a GELU MLP ``mlp_ratio`` × ``dim`` wide, a final
    LayerNorm and a linear layer on the class token. 138,762 parameters on 1×28×28 with 10 classes (49
    patches of 4×4).

    LayerNorm normalises each token by itself: no BatchNorm, so the state holds parameters only and no
    running statistics (unlike ``resnet20`` and ``resnet14``). No dropout: it would draw from torch's
    global generator inside the client worker threads, and runs must repeat to the bit. The class token
    and the position embeddings start from N(0, 0.02²), every other layer from PyTorch's defaults, drawn
    from torch's global generator at construction (which the run seeds).

    Image sides that are not multiples of ``patch_size`` are refused (a ``ValueError`` naming
    ``model.patch_size``); the options' own values are checked by name.

    Example:
        >>> ViT(input_shape=(1, 28, 28), num_classes=10)(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        *,
        input_shape: tuple[int, int, int],
        num_classes: int,
        patch_size: int = 4,
        dim: int = 64,
        depth: int = 4,
        heads: int = 4,
        mlp_ratio: float = 2.0,
    ) -> None:
        super().__init__()
        require(patch_size >= 1, "patch_size", f"must be >= 1, got {patch_size}")
        require(dim >= 1, "dim", f"must be >= 1, got {dim}")
        require(depth >= 1, "depth", f"must be >= 1, got {depth}")
        require(heads >= 1 and dim % heads == 0, "heads", f"must be >= 1 and divide dim={dim}, got {heads}")
        hidden = round(dim * mlp_ratio)
        require(hidden >= 1, "mlp_ratio", f"must make a hidden layer of at least 1 unit, got {mlp_ratio}")
        channels, height, width = input_shape
        if height % patch_size or width % patch_size:
            raise ValueError(
                f"vit needs image sides divisible by model.patch_size={patch_size}, got {height}×{width}"
            )
        tokens = (height // patch_size) * (width // patch_size) + 1  # the patches and the class token
        self.patch = nn.Conv2d(channels, dim, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.empty(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.empty(1, tokens, dim))
        self.blocks = nn.Sequential(*(Block(dim, heads, hidden) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.pos_embed, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        patches = self.patch(x).flatten(2).transpose(1, 2)  # [b, patches, dim]
        cls = self.cls_token.expand(patches.shape[0], -1, -1)
        tokens = self.blocks(torch.cat([cls, patches], dim=1) + self.pos_embed)
        return self.head(self.norm(tokens[:, 0]))
