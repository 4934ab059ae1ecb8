"""The styled convolution on the plain path: CUDA, MPS and any device without the CPU's workspace.

Same math as the reference formulation (``StyledConv``: ``lrelu(cat(d * conv(x * s, w), g * f) + b)``,
the sqrt(2) gain folded in), arranged for few passes over memory and for float16 headroom:

* where an image's activations outnumber the weights (the high-resolution layers, which carry
  nearly all the memory traffic), each image's weight carries its modulation, its demodulation and
  the gain, and the bias goes into the convolution (for upsampling, into the blur after it), so
  the convolution's output only needs the leaky ReLU, which writes it straight into its half of
  the concatenation buffer: 2 passes over the output instead of 5 (scale the input, add the bias
  with the demodulation, write the feature, activate everything). A demodulated weight has unit
  norm per output channel, so no style can overflow it in float16;
* elsewhere (the 4..64 px layers with many channels, where a per-image weight would be larger than
  the image) the style scales the input and the demodulation the output, with the style of each
  image first divided by its largest magnitude (and by sqrt(fan-in)) and the demodulation
  multiplied by the same factor, as StyleGAN2-ADA does before a half-precision modulated
  convolution: the product is unchanged, but ``x * s`` and the convolution's sums stay in float16
  range whatever the style's scale. (StyleGAN2-ADA also divides each output channel's weight by
  its largest magnitude; that would cost a copy of the largest weights, and stored float16
  weights are in range already, so here the weight is used as stored.)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .derived import derived
from .filters import depthwise_weight
from .layers import LRELU_SLOPE, SQRT2

__all__ = ["folds_per_image", "normalized_styles", "styled_conv"]


def folds_per_image(conv, x: torch.Tensor) -> bool:
    """Whether ``conv``'s modulation goes into a per-image weight for input ``x``: when the weight
    is smaller than one image's activations (and the upsampling blur is the symmetric 4x4 one)."""
    if conv.weight[0].numel() >= x[0].numel():
        return False
    return not conv.upsample or (conv.blur.pad[0] == conv.blur.pad[1] and tuple(conv.blur.kernel.shape) == (4, 4))


def normalized_styles(s: torch.Tensor, d: torch.Tensor, fan_in: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(s / m, d * m)`` with ``m`` per image: the largest ``|s|`` times sqrt(fan_in) (float32)."""
    m = s.abs().amax(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny) * math.sqrt(fan_in)
    return s / m, d * m


def styled_conv(layer, x: torch.Tensor, s: torch.Tensor, d: torch.Tensor, feature: torch.Tensor,
                x_is_scratch: bool) -> torch.Tensor:
    """``layer`` (a ``StyledConv``) on ``x`` with float32 modulation ``s`` (B, in) and demodulation
    ``d`` (B, out): returns the (B, 2 out, H, W) channels-last concatenation after bias and leaky ReLU.
    ``x`` is scaled in place when ``x_is_scratch``."""
    conv = layer.conv
    b, c = x.shape[0], conv.out_ch
    h, w = feature.shape[2:]
    dt = x.dtype
    bias = (layer.activate.bias.float() * SQRT2).to(dt)
    gain = (layer.noise.weight.float() * SQRT2).to(dt).view(1, 1, 1, 1)
    out = torch.empty((b, 2 * c, h, w), dtype=dt, device=x.device, memory_format=torch.channels_last)
    if folds_per_image(conv, x):
        weights = _folded_weights(conv, s, d * SQRT2, dt)
        blur = None
        if conv.upsample:
            blur = derived(conv.blur, "depthwise_plain", conv.blur.kernel,
                           lambda: depthwise_weight(conv.blur.kernel, c, dt).contiguous())
        for i in range(b):
            xi = x[i:i + 1]
            if conv.upsample:
                y = F.conv_transpose2d(xi, weights[i], stride=2)
                y = F.conv2d(y, blur.to(dt), bias[:c], padding=conv.blur.pad[0], groups=c)
            else:
                y = F.conv2d(xi, weights[i], bias[:c], padding=conv.kernel_size // 2)
            torch.ops.aten.leaky_relu.out(y, LRELU_SLOPE, out=out[i:i + 1, :c])
            del y
        tail = out[:, c:]
        torch.addcmul(bias[c:].view(1, -1, 1, 1), feature, gain, out=tail)
        F.leaky_relu_(tail, LRELU_SLOPE)
        return out
    s, d = normalized_styles(s, d * SQRT2, conv.in_ch * conv.kernel_size ** 2)
    scale = s.to(dt)[:, :, None, None]
    x = x.mul_(scale) if x_is_scratch else x * scale
    if conv.upsample:  # conv_transpose2d wants (in, out, k, k)
        weight = derived(conv, "weight_t", conv.weight, lambda: conv.weight[0].transpose(0, 1).contiguous())
        y = conv.blur(F.conv_transpose2d(x, weight.to(dt), stride=2))
    else:
        y = F.conv2d(x, conv.weight[0].to(dt), padding=conv.kernel_size // 2)
    torch.addcmul(bias[:c].view(1, -1, 1, 1), y, d.to(dt)[:, :, None, None], out=out[:, :c])
    del y
    torch.addcmul(bias[c:].view(1, -1, 1, 1), feature, gain, out=out[:, c:])
    return F.leaky_relu_(out, LRELU_SLOPE)


def _folded_weights(conv, s: torch.Tensor, d: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Per-image weights ``w[o, i] * s[b, i] * d[b, o]`` (B, out, in, k, k), or for upsampling in
    ``conv_transpose2d``'s layout (B, in, out, k, k); computed in float32, returned in ``dtype``."""
    w = conv.weight[0].float()[None] * s[:, None, :, None, None] * d[:, :, None, None, None]
    if conv.upsample:
        w = w.transpose(1, 2)
    return w.to(dtype).contiguous()
