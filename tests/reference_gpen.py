"""An independent, deliberately literal formulation of the GPEN forward pass, used as a test oracle.

It reads the tensors of a state dict and computes the network the way the architecture is
usually written: per-sample modulated and demodulated weights, one grouped convolution per layer,
and a generic "upsample, pad, FIR-filter, downsample" routine. It shares no code with
``gpen.model.network`` (which uses activation-side modulation and batch-wide convolutions), so agreement
between the two on full-width layouts is evidence that the fast formulation is exact.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def upfirdn(x: torch.Tensor, k: torch.Tensor, up: int, down: int, pad: tuple[int, int]) -> torch.Tensor:
    b, c, h, w = (int(v) for v in x.shape)  # Python ints: the legacy ONNX exporter needs static shapes
    if up > 1:
        z = x.new_zeros(b, c, h * up, w * up)
        z[:, :, ::up, ::up] = x
        x = z
    x = F.pad(x, [pad[0], pad[1], pad[0], pad[1]])
    kk = torch.flip(k, [0, 1]).to(x)[None, None].repeat(c, 1, 1, 1)
    x = F.conv2d(x, kk, groups=c)
    return x[:, :, ::down, ::down]


def lrelu(x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x + bias.view(1, -1, *([1] * (x.ndim - 2))), 0.2) * math.sqrt(2)


def equal_linear(sd, prefix, x, lr_mul=1.0, act=False):
    w = sd[prefix + ".weight"]
    y = F.linear(x, w * (lr_mul / math.sqrt(w.shape[1])))
    b = sd[prefix + ".bias"] * lr_mul
    return lrelu(y, b) if act else y + b


def modconv(sd, prefix, x, style, demod=True, up=False):
    w = sd[prefix + ".weight"]  # (1, O, I, k, k)
    _, o, i, k, _ = (int(v) for v in w.shape)
    b = int(x.shape[0])
    s = equal_linear(sd, prefix + ".modulation", style)
    weight = w / math.sqrt(i * k * k) * s.view(b, 1, i, 1, 1)
    if demod:
        weight = weight * torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + 1e-8).view(b, o, 1, 1, 1)
    xs = x.reshape(1, b * i, *x.shape[2:])
    if up:
        wt = weight.transpose(1, 2).reshape(b * i, o, k, k)
        out = F.conv_transpose2d(xs, wt, stride=2, groups=b)
        out = out.view(b, o, *out.shape[2:])
        return upfirdn(out, sd[prefix + ".blur.kernel"], 1, 1, (1, 1))
    out = F.conv2d(xs, weight.reshape(b * o, i, k, k), padding=k // 2, groups=b)
    return out.view(b, o, *out.shape[2:])


def styled(sd, prefix, x, style, feat, up=False):
    out = modconv(sd, prefix + ".conv", x, style, up=up)
    out = torch.cat([out, sd[prefix + ".noise.weight"] * feat], 1)
    return lrelu(out, sd[prefix + ".activate.bias"])


def to_rgb(sd, prefix, x, style, skip=None):
    out = modconv(sd, prefix + ".conv", x, style, demod=False) + sd[prefix + ".bias"]
    if skip is not None:
        out = out + upfirdn(skip, sd[prefix + ".upsample.kernel"], 2, 1, (2, 1))
    return out


def reference_forward(sd: dict, x: torch.Tensor) -> torch.Tensor:
    """GPEN forward pass from a state dict ``sd`` (float tensors) on input ``x`` (B,3,S,S)."""
    n = len([k for k in sd if k.startswith("ecd") and k.endswith(".weight")])
    feats = []
    h = lrelu(F.conv2d(x, sd["ecd0.0.0.weight"] / math.sqrt(3)), sd["ecd0.0.1.bias"])
    feats.append(h)
    for i in range(1, n):
        w = sd[f"ecd{i}.0.1.weight"]
        h = upfirdn(h, sd[f"ecd{i}.0.0.kernel"], 1, 1, (2, 2))
        h = lrelu(F.conv2d(h, w / math.sqrt(w[0].numel()), stride=2), sd[f"ecd{i}.0.2.bias"])
        feats.append(h)
    latent = equal_linear(sd, "final_linear.0", h.flatten(1), act=True)
    feats = feats[::-1]
    style = latent * torch.rsqrt(latent.pow(2).mean(1, keepdim=True) + 1e-8)
    n_mlp = len([k for k in sd if k.startswith("generator.style.") and k.endswith(".weight")])
    for j in range(1, n_mlp + 1):
        style = equal_linear(sd, f"generator.style.{j}", style, lr_mul=0.01, act=True)
    const = sd["generator.input.input"].repeat(x.shape[0], 1, 1, 1)
    out = styled(sd, "generator.conv1", const, style, feats[0])
    skip = to_rgb(sd, "generator.to_rgb1", out, style)
    for j in range(n - 1):
        out = styled(sd, f"generator.convs.{2 * j}", out, style, feats[j + 1], up=True)
        out = styled(sd, f"generator.convs.{2 * j + 1}", out, style, feats[j + 1])
        skip = to_rgb(sd, f"generator.to_rgbs.{j}", out, style, skip)
    return skip
