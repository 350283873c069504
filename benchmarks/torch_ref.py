"""PyTorch references of Strata's GPT and ResNets, written the way a PyTorch user would
(nanoGPT's GPT; torchvision-style BasicBlock ResNet), for side-by-side timing only.

Same architectures as `models/gpt.py` and `models/resnet.py` (pre-LayerNorm blocks with
biases, tanh-GELU, learned positions, untied head without bias; CIFAR-stem ResNet-18 and
ResNet-20 with projection shortcuts), same optimizers as `train/optimizers.py` (AdamW with decay on
matrices only and global-norm clipping; SGD with Nesterov momentum and weight decay on
matrices only). Imported only when torch is installed (`pip install -e '.[bench]'`).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


# --- GPT ---------------------------------------------------------------------------------

class CausalSelfAttention(nn.Module):
    def __init__(self, width: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(width, 3 * width)   # nanoGPT's fused c_attn
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, e = x.shape
        q, k, v = self.qkv(x).split(e, dim=2)
        q, k, v = (z.view(b, t, self.num_heads, e // self.num_heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, D)
        return self.out(y.transpose(1, 2).reshape(b, t, e))


class Block(nn.Module):
    def __init__(self, width: int, num_heads: int, mlp_ratio: int):
        super().__init__()
        self.ln_attn = nn.LayerNorm(width, eps=1e-5)
        self.attn = CausalSelfAttention(width, num_heads)
        self.ln_mlp = nn.LayerNorm(width, eps=1e-5)
        self.mlp_in = nn.Linear(width, mlp_ratio * width)
        self.mlp_out = nn.Linear(mlp_ratio * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_attn(x))
        return x + self.mlp_out(F.gelu(self.mlp_in(self.ln_mlp(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, vocab_size=256, num_layers=6, num_heads=6, width=384, mlp_ratio=4, max_len=256):
        super().__init__()
        self.token_embed = nn.Embedding(vocab_size, width)
        self.pos_embed = nn.Parameter(torch.zeros(max_len, width))
        self.blocks = nn.ModuleList(Block(width, num_heads, mlp_ratio) for _ in range(num_layers))
        self.ln_final = nn.LayerNorm(width, eps=1e-5)
        self.head = nn.Linear(width, vocab_size, bias=False)
        for name, p in self.named_parameters():
            if p.dim() > 1:
                std = 0.02 / math.sqrt(2 * num_layers) if name.endswith(("out.weight", "mlp_out.weight")) else 0.02
                nn.init.normal_(p, std=std)
            elif "ln" not in name:
                nn.init.zeros_(p)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.token_embed(tokens) + self.pos_embed[: tokens.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_final(x))


# --- ResNet-18 (CIFAR stem) ---------------------------------------------------------------

class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout, momentum=0.1, eps=1e-5)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout, momentum=0.1, eps=1e-5)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout, momentum=0.1, eps=1e-5))
        nn.init.zeros_(self.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu((x if self.shortcut is None else self.shortcut(x)) + y)


class ResNet(nn.Module):
    """CIFAR-stem ResNet of BasicBlocks: `blocks` per stage, widths width * 2**stage."""

    def __init__(self, blocks: tuple[int, ...] = (2, 2, 2, 2), num_classes: int = 10, width: int = 64,
                 in_channels: int = 3):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width),
                                  nn.ReLU())
        layers, cin = [], width
        for stage, num_blocks in enumerate(blocks):
            cout = width * 2**stage
            for i in range(num_blocks):
                layers.append(BasicBlock(cin, cout, 2 if stage > 0 and i == 0 else 1))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.head = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.stem(x))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def ResNet18(num_classes: int = 10, width: int = 64) -> ResNet:
    return ResNet((2, 2, 2, 2), num_classes, width)


def ResNet20(num_classes: int = 10, in_channels: int = 1) -> ResNet:
    """He et al.'s CIFAR ResNet-20 (3 stages of 3 blocks, 16-32-64) with projection
    shortcuts: Strata's `ResNet(depth=20, family="cifar")`."""
    return ResNet((3, 3, 3), num_classes, 16, in_channels)


# --- optimizers and steps -----------------------------------------------------------------

def _groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay on matrices/kernels only, as `train/optimizers.py`'s `_decay_mask`."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [{"params": [p for p in params if p.dim() > 1], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() <= 1], "weight_decay": 0.0}]


def adamw(model, lr, b1, b2, eps, weight_decay, fused=None):
    return torch.optim.AdamW(_groups(model, weight_decay), lr=lr, betas=(b1, b2), eps=eps, fused=fused)


def sgd(model, lr, momentum, nesterov, weight_decay):
    return torch.optim.SGD(_groups(model, weight_decay), lr=lr, momentum=momentum, nesterov=nesterov)


def lm_step(model, opt, tokens, grad_clip: float) -> torch.Tensor:
    """One AdamW step of next-token cross-entropy on (B, T + 1) tokens."""
    logits = model(tokens[:, :-1])
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    return loss


def classification_step(model, opt, images, labels) -> torch.Tensor:
    loss = F.cross_entropy(model(images), labels)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss
