"""The GPEN face-restoration network (encoder + StyleGAN2 generator), in plain PyTorch.

Parameter and buffer names follow the released GPEN-BFR checkpoints exactly, so their state
dicts load key for key. The computation is the published architecture (Yang et al., "GAN Prior
Embedded Network for Blind Face Restoration in the Wild", CVPR 2021):

* an encoder ``ecd0 .. ecd{L-2}`` of equalised convolutions that halves the resolution at every
  step, whose features are kept, and ``final_linear`` that maps the 4x4 features to a latent;
* a StyleGAN2 generator whose mapping network turns that latent into one style for every layer,
  and whose styled convolutions concatenate the encoder feature of matching resolution to their
  output (where plain StyleGAN2 injects random noise), followed by RGB skip outputs.

Equivalent reformulations keep this fast on every device (the outputs equal the reference
formulation's to float rounding, which the tests check against the official outputs):

* modulation is applied to the activations (or folded into the weight for a single image) and
  demodulation to the output channels, so the whole batch runs through ONE ordinary convolution
  with the shared weight instead of a grouped convolution with per-sample weights;
* the activation's sqrt(2) gain, the bias and the demodulation are folded into one pass that
  writes straight into the buffer that also receives the encoder feature (no concatenation copy),
  and the leaky ReLU runs in place; on the CPU, where the modulation is folded into each image's
  weight, the demodulation goes there too and the bias into the convolution, and the leaky ReLU
  is the pass that writes into the concatenation buffer (for outputs of under 64 bytes a pixel,
  bfloat16 at 16 channels, a concatenation and whole-buffer passes instead:
  ``layers.finish_in_contiguous_passes``);
* activations are kept channels-last (NHWC), the layout in which CPU convolution and the
  depthwise blur filters are fastest;
* the style path (mapping network, modulation, demodulation statistics) always runs in float32,
  so float16/bfloat16 inference cannot overflow there, while convolutions run in the model's
  dtype.

On the CPU more (``bench/`` measures each): activations live in buffers kept between calls
(``gpen.model.workspace``; convolutions write into them, ``gpen.model.cpu_conv``), so no call
faults in gigabytes of fresh pages (:meth:`GPEN.release_buffers` gives them back); the
many-channel 3x3 layers run as Winograd products, F(4x4, 3x3) in float32 (4x fewer multiplications)
and F(2x2, 3x3) in bfloat16 (2.25x), with the modulation in the input transform and demodulation and
bias in the write of the output tiles (``gpen.model.winograd``); transposed convolutions of small images run as one matrix product,
those of large images in row bands blurred as they are made (``cpu_conv.upsample_blur_into``); the
float32 matrix products (Winograd's, the small transposed convolutions', ToRGB's) go through oneDNN
on x86 processors other than Intel's, where torch's MKL takes its AVX2 code (``gpen.model.cpu_matmul``).

The forward pass is for inference (it writes into its own intermediate buffers); it runs under
``torch.inference_mode`` and never modifies its input.
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..compat import is_compiling
from ..errors import InvalidInputError
from . import cpu_matmul, cuda_graphs, layers, plain_path, winograd
from .config import GPENConfig, default_channels
from .derived import DERIVED_CACHE, CachingModule, drop_derived
from .derived import derived as _derived
from .cpu_conv import conv2d_into, conv_transpose3x3_s2_into, transpose_weight_cols, upsample_blur_into
from .filters import Blur, Upsample, blur_kernel, depthwise_weight
from .layers import LRELU_SLOPE, SQRT2, ConstantInput, EqualLinear, NoiseInjection, PixelNorm, rowwise
from .workspace import KeepsBuffers, Session, Workspace

__all__ = ["DERIVED_CACHE", "GPEN", "GPENConfig", "blur_kernel", "default_channels", "drop_derived"]

log = logging.getLogger(__name__)

MAPPING_LR_MUL = 0.01


class EqualConv2d(CachingModule):
    """Weights of a convolution with equalised learning rate (computed by ``ConvLayer``, fused)."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int = 1, padding: int = 0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel_size, kernel_size))
        self.scale = 1.0 / math.sqrt(in_ch * kernel_size ** 2)
        self.stride = stride
        self.padding = padding


class FusedLeakyReLU(CachingModule):
    """Bias of the scaled leaky ReLU (applied inside ``ConvLayer`` / ``StyledConv``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))


class ConvLayer(nn.Sequential):
    """Encoder block: [blur] -> equalised conv (stride 2 when downsampling) -> bias + lrelu."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, downsample: bool = False) -> None:
        layers: list[nn.Module] = []
        if downsample:
            p = 2 + (kernel_size - 1)
            layers.append(Blur(pad=((p + 1) // 2, p // 2)))
            layers.append(EqualConv2d(in_ch, out_ch, kernel_size, stride=2, padding=0))
        else:
            layers.append(EqualConv2d(in_ch, out_ch, kernel_size, padding=kernel_size // 2))
        layers.append(FusedLeakyReLU(out_ch))
        super().__init__(*layers)

    def forward(self, x: torch.Tensor, ws: Session | None = None) -> torch.Tensor:
        *pre, conv, act = self
        for blur in pre:
            blurred = blur(x, ws)
            x = blurred
        # lrelu(z) * sqrt2 == lrelu(sqrt2 * z): the gain and the bias go into the convolution.
        weight = _derived(conv, "scaled_weight", conv.weight, lambda: conv.weight * (conv.scale * SQRT2))
        bias = _derived(act, "scaled_bias", act.bias, lambda: act.bias * SQRT2)
        weight, bias = weight.to(x.dtype), bias.to(x.dtype)
        if ws is None:
            out = F.conv2d(x, weight, bias, stride=conv.stride, padding=conv.padding)
        else:
            b, _, h, w = x.shape
            k, st, p = weight.shape[-1], conv.stride, conv.padding
            out = ws.take((b, weight.shape[0], (h + 2 * p - k) // st + 1, (w + 2 * p - k) // st + 1), x)
            conv2d_into(out, x, weight, bias, st, p)
            if pre:
                ws.give(blurred)
        return F.leaky_relu_(out, LRELU_SLOPE)


class ModulatedConv2d(CachingModule):
    """StyleGAN2 modulated convolution, optionally with 2x upsampling (transposed conv + blur).

    The reference formulation scales the weight per sample, ``w'[b,o,i] = w[o,i] * s[b,i]``,
    demodulates it, ``w''[b,o,i] = w'[b,o,i] / sqrt(sum_i,k w'[b,o,i,k]^2 + eps)``, and runs a
    grouped convolution. Because convolution is linear, ``conv(x, w'') == d[b,o] * conv(x * s[b], w)``
    with ``d[b,o] = rsqrt(sum_i s[b,i]^2 * sum_k w[o,i,k]^2 + eps)``; that is what runs here, with
    the shared weight for the whole batch.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, style_dim: int,
                 demodulate: bool = True, upsample: bool = False) -> None:
        super().__init__()
        self.in_ch, self.out_ch, self.kernel_size = in_ch, out_ch, kernel_size
        self.weight = nn.Parameter(torch.randn(1, out_ch, in_ch, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_ch, bias_init=1.0)
        self.scale = 1.0 / math.sqrt(in_ch * kernel_size ** 2)
        self.demodulate = demodulate
        self.upsample = upsample
        if upsample:
            p = (4 - 2) - (kernel_size - 1)
            self.blur = Blur(pad=((p + 1) // 2 + 1, p // 2 + 1), gain=4.0)

    def styles(self, style: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Float32 modulation ``s * scale`` (B, in) and demodulation ``d`` (B, out) (None without)."""
        s = self.modulation(style) * self.scale
        if not self.demodulate:
            return s, None
        wsq = _derived(self, "weight_sq", self.weight, lambda: self.weight[0].float().pow(2).sum(dim=(2, 3)))
        return s, torch.rsqrt(rowwise(lambda r: r.pow(2) @ wsq.t(), s) + 1e-8)

    def convolve(self, x: torch.Tensor, s: torch.Tensor, x_is_scratch: bool, ws: Session | None = None,
                 demod: torch.Tensor | None = None, bias: torch.Tensor | None = None) -> tuple[torch.Tensor, bool]:
        """``(y, finished)``: y = conv(x * s, weight) -- for upsampling the stride-2 transposed conv and
        the blur --, and with ``finished`` ``demod[:, :, None, None] * y + bias`` instead.

        The modulation goes where it costs least: folded into the weight of each image whose
        activations outnumber the weights (with ``ws``, one convolution per image; without, only for
        a single image), else onto the input (in place when ``x_is_scratch`` says the caller no
        longer needs ``x``). With ``ws`` the output is a workspace buffer; where the weights are
        folded per image there, ``demod`` (B, out) joins the modulation in them and ``bias`` (out,)
        the convolution, which saves the caller a pass over the output (``finished``).
        """
        b, _, h, w = x.shape
        if self.upsample and ws is not None and max(h, w) <= GEMM_TRANSPOSED_MAX_SIDE:
            # (in, 9 out) matrix; the modulation goes onto the input (smaller than the weight here).
            cols = ws.derived(self, "transposed_cols", self.weight, lambda: transpose_weight_cols(self.weight[0]))
            x = x.mul_(s.to(x.dtype)[:, :, None, None]) if x_is_scratch else x * s.to(x.dtype)[:, :, None, None]
            y = ws.take((b, self.out_ch, 2 * h + 1, 2 * w + 1), x)
            if cpu_matmul.uses_onednn(x.dtype):
                conv_transpose3x3_s2_into(y, x, cols.to(x.dtype))
            else:
                taps = ws.scratch(b * h * w * cols.shape[1], x)
                conv_transpose3x3_s2_into(y, x, cols.to(x.dtype), taps.view(b * h * w, -1))
                ws.give(taps)
            out = self.blur(y, ws)
            ws.give(y)
            return out, False
        weight = self.weight[0]
        if self.upsample:  # conv_transpose2d wants (in, out, k, k)
            weight = _derived(self, "weight_t", self.weight, lambda: self.weight[0].transpose(0, 1).contiguous())
        per_image = weight.numel() < x[0].numel() and (b == 1 or ws is not None)
        if not per_image:
            scale = s.to(x.dtype)[:, :, None, None]
            x = x.mul_(scale) if x_is_scratch else x * scale
            weight = weight.to(x.dtype)
        banded = (self.upsample and per_image and BANDED_UPSAMPLE and self.blur.pad == (1, 1)
                  and self.blur.kernel.shape == (4, 4))
        finished = (ws is not None and per_image and demod is not None and FOLD_DEMODULATION
                    and (banded or not self.upsample))
        in_shape, out_shape = ((-1, 1, 1, 1), (1, -1, 1, 1)) if self.upsample else ((1, -1, 1, 1), (-1, 1, 1, 1))

        def fold(i: int) -> torch.Tensor:
            if not per_image:
                return weight
            folded = weight * s[i].to(weight.dtype).view(in_shape)
            if finished:
                folded = folded * demod[i].to(weight.dtype).view(out_shape)
            return folded.to(x.dtype)

        bias = bias if finished else None
        if ws is None:
            if self.upsample:
                return self.blur(F.conv_transpose2d(x, fold(0), stride=2)), False
            return F.conv2d(x, fold(0), padding=self.kernel_size // 2), False
        if self.upsample:
            out = ws.take((b, self.out_ch, 2 * h, 2 * w), x)
            if not per_image:
                return self.blur(F.conv_transpose2d(x, weight, stride=2), ws, out=out), False
            if banded:
                blur = ws.derived(self.blur, "depthwise", self.blur.kernel,
                                  lambda: depthwise_weight(self.blur.kernel, self.out_ch, x.dtype).contiguous())
                for i in range(b):
                    upsample_blur_into(out[i:i + 1], x[i:i + 1], fold(i), blur.to(x.dtype), bias)
                return out, finished
            for i in range(b):
                self.blur(F.conv_transpose2d(x[i:i + 1], fold(i), stride=2), ws, out=out[i:i + 1])
            return out, False
        out = ws.take((b, self.out_ch, h, w), x)
        if not per_image:
            return conv2d_into(out, x, weight, None, 1, self.kernel_size // 2), False
        for i in range(b):
            conv2d_into(out[i:i + 1], x[i:i + 1], fold(i), bias, 1, self.kernel_size // 2)
        return out, finished


def cast_activation(x: torch.Tensor, dtype: torch.dtype, ws: Session | None, keep: bool = False) -> torch.Tensor:
    """``x`` in ``dtype``: ``x`` itself, or a copy; with ``ws`` the copy is a workspace buffer and
    ``x`` (a workspace buffer too) is handed back unless ``keep``."""
    if x.dtype == dtype:
        return x
    if ws is None:
        return x.to(dtype)
    out = ws.take(x.shape, torch.empty((), dtype=dtype, device=x.device)).copy_(x)
    if not keep:
        ws.give(x)
    return out


GEMM_TRANSPOSED_MAX_SIDE = 32  # on the CPU, transposed convolutions as one matrix product up to this input side
BANDED_UPSAMPLE = True  # above it, transposed convolution and blur in row bands (tests switch it off)
FOLD_DEMODULATION = True  # per-image weights on the CPU carry the demodulation too (tests switch it off)


class StyledConv(nn.Module):
    """Modulated conv -> concatenated encoder feature -> bias + lrelu (output has 2x channels)."""

    def __init__(self, in_ch: int, out_ch: int, style_dim: int, upsample: bool = False) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, out_ch, 3, style_dim, upsample=upsample)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_ch * 2)

    def forward(self, x: torch.Tensor, style: torch.Tensor, feature: torch.Tensor,
                x_is_scratch: bool = False, ws: Session | None = None) -> torch.Tensor:
        """lrelu(cat(conv(x, style), w_n * feature) + bias) * sqrt2, in one output buffer."""
        conv = self.conv
        s, d = conv.styles(style)
        tracing = torch.jit.is_tracing() or is_compiling()
        if ws is None and not tracing:  # CUDA, MPS...: gpen.model.plain_path
            return plain_path.styled_conv(self, x, s, d, feature, x_is_scratch)
        b, c = x.shape[0], conv.out_ch
        h, wd = feature.shape[2:]
        dt = x.dtype
        bias = (self.activate.bias.float() * SQRT2).to(dt)
        demod = (d * SQRT2).to(dt)
        gain = (self.noise.weight.float() * SQRT2).to(dt).view(1, 1, 1, 1)
        if tracing:  # tracers and compilers see no writes into views
            y, _ = conv.convolve(x, s, x_is_scratch)
            out = torch.cat((torch.addcmul(bias[:c].view(1, -1, 1, 1), y, demod[:, :, None, None]),
                             torch.addcmul(bias[c:].view(1, -1, 1, 1), feature, gain)), 1)
            return F.leaky_relu(out, LRELU_SLOPE)
        out = ws.take((b, 2 * c, h, wd), x)
        if conv.kernel_size == 3 and not conv.upsample and winograd.pays(conv.in_ch, c, x):
            u = ws.derived(conv, "winograd", conv.weight, lambda: winograd.conv_weight(conv.weight[0]))
            winograd.conv3x3(x, s.to(dt), u, out[:, :c], bias[:c], demod, ws)
        else:
            y, finished = conv.convolve(x, s, x_is_scratch, ws, demod, bias[:c])
            if finished and c * out.element_size() < layers.SHORT_RUN_BYTES:  # bfloat16 at 16 channels
                layers.finish_in_contiguous_passes(out, y, feature, bias[c:], gain)
                ws.give(y)
                return out
            if finished:  # the leaky ReLU on the way into the concatenation: one pass
                torch.ops.aten.leaky_relu.out(y, LRELU_SLOPE, out=out[:, :c])
                ws.give(y)
                tail = out[:, c:]
                torch.addcmul(bias[c:].view(1, -1, 1, 1), feature, gain, out=tail)
                F.leaky_relu_(tail, LRELU_SLOPE)
                return out
            torch.addcmul(bias[:c].view(1, -1, 1, 1), y, demod[:, :, None, None], out=out[:, :c])
            if ws is not None:
                ws.give(y)
        torch.addcmul(bias[c:].view(1, -1, 1, 1), feature, gain, out=out[:, c:])
        return F.leaky_relu_(out, LRELU_SLOPE)


RGB_BAND_PIXELS = 2 ** 16  # pixels per product of ToRGB through oneDNN (its output: 768 KiB in float32)


class ToRGB(nn.Module):
    """1x1 modulated conv (no demodulation) to RGB, plus the upsampled previous RGB skip."""

    def __init__(self, in_ch: int, style_dim: int, upsample: bool = True) -> None:
        super().__init__()
        if upsample:
            self.upsample = Upsample()
        self.conv = ModulatedConv2d(in_ch, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor, skip: torch.Tensor | None = None,
                ws: Session | None = None) -> torch.Tensor:
        """RGB of ``x`` plus the upsampled ``skip``; with ``ws`` the result is a workspace buffer."""
        s, _ = self.conv.styles(style)
        # A 1x1 conv to 3 channels is a batched matrix product over the channels-last pixels.
        weight = (self.conv.weight[0, :, :, 0, 0].float()[None] * s[:, None, :]).to(x.dtype)  # (B, 3, in)
        b, c, h, wd = x.shape
        pixels = x.permute(0, 2, 3, 1).reshape(b, h * wd, c)
        if ws is None:
            out = torch.baddbmm(self.bias.to(x.dtype).view(1, 1, 3), pixels, weight.transpose(1, 2))
            rgb = out.view(b, h, wd, 3).permute(0, 3, 1, 2)
        else:  # planar RGB (the skip's upsampling is fastest on it)
            out = ws.take((b, 3, h * wd), x, channels_last=False)
            if cpu_matmul.uses_onednn(x.dtype):  # (pixels, in) @ (in, 3) in bands, each copied into the planes
                bias = self.bias.to(x.dtype).view(3)
                for i in range(b):
                    for a in range(0, h * wd, RGB_BAND_PIXELS):
                        band = slice(a, a + RGB_BAND_PIXELS)
                        out[i, :, band].copy_(cpu_matmul.linear(pixels[i, band], weight[i], bias).t())
            else:  # (3, in) @ (in, pixels): long output rows
                torch.baddbmm(self.bias.to(x.dtype).view(1, 3, 1), weight, pixels.transpose(1, 2), out=out)
            rgb = out.view(b, 3, h, wd)
        if skip is not None:
            skip = cast_activation(skip, rgb.dtype, ws)
            if ws is None:
                rgb = rgb + self.upsample(skip)
            else:
                self.upsample.add_to(rgb, skip, ws)
                ws.give(skip)
        return rgb


class Generator(nn.Module):
    """StyleGAN2 generator whose per-layer noise is replaced by encoder features (concatenated)."""

    def __init__(self, config: GPENConfig) -> None:
        super().__init__()
        ch = config.channels
        sd = config.style_dim
        self.style = nn.Sequential(
            PixelNorm(), *[EqualLinear(sd, sd, lr_mul=MAPPING_LR_MUL, activation=True) for _ in range(config.n_mlp)]
        )
        self.input = ConstantInput(ch[4])
        self.conv1 = StyledConv(ch[4], ch[4], sd)
        self.to_rgb1 = ToRGB(ch[4] * 2, sd, upsample=False)
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        in_ch = ch[4]
        for i in range(3, config.log_size + 1):
            out_ch = ch[2 ** i]
            self.convs.append(StyledConv(in_ch * 2, out_ch, sd, upsample=True))
            self.convs.append(StyledConv(out_ch * 2, out_ch, sd))
            self.to_rgbs.append(ToRGB(out_ch * 2, sd))
            in_ch = out_ch

    def forward(self, latent: torch.Tensor, features: list[torch.Tensor], ws: Session | None = None) -> torch.Tensor:
        """``latent`` (B, style_dim) before the mapping network; ``features`` from 4x4 upwards.

        With ``ws`` every activation (and each feature, once used) goes back to the workspace as
        soon as it is dead; the returned RGB is then a workspace buffer too. Each layer computes in
        its weights' dtype (a bfloat16 network keeps its small layers in float32,
        ``gpen.model.precision``): activations are cast where it changes.
        """
        w = self.style(latent)  # one style for every layer
        const = self.input(latent.shape[0]).to(self.conv1.conv.weight.dtype)
        out = self.conv1(const.contiguous(memory_format=torch.channels_last), w, features[0], ws=ws)
        skip = self.to_rgb1(out, w, ws=ws)
        for j, to_rgb in enumerate(self.to_rgbs):
            feat = features[j + 1]
            # Each activation buffer is read by its RGB skip first, then scaled in place.
            for conv in (self.convs[2 * j], self.convs[2 * j + 1]):
                out = cast_activation(out, conv.conv.weight.dtype, ws)
                done, out = out, conv(out, w, feat, x_is_scratch=True, ws=ws)
                if ws is not None:
                    ws.give(done)
            if ws is not None:
                ws.give(feat)
            skip = to_rgb(out, w, skip, ws=ws)
        return skip


class GPEN(KeepsBuffers, nn.Module):
    """GPEN blind face restoration network (the ``FullGenerator`` of the released checkpoints).

    ``forward(x)``: ``x`` is a batch (B, 3, size, size) of RGB faces aligned to the GPEN template,
    scaled to -1..1 as ``(rgb / 255 - 0.5) / 0.5``; returns the restored batch, same shape and range
    (not clamped). Deterministic: there is no random noise.
    """

    def __init__(self, config: GPENConfig) -> None:
        super().__init__()
        self.config = config
        self.size = config.size
        ch = config.channels
        n = config.log_size - 1  # encoder stages: size, size/2, ..., 4
        self.ecd0 = nn.Sequential(ConvLayer(3, ch[config.size], 1))
        in_ch = ch[config.size]
        for i in range(1, n):
            out_ch = ch[config.size >> i]
            setattr(self, f"ecd{i}", nn.Sequential(ConvLayer(in_ch, out_ch, 3, downsample=True)))
            in_ch = out_ch
        self.final_linear = nn.Sequential(EqualLinear(ch[4] * 16, config.style_dim, activation=True))
        self.generator = Generator(config)
        self._encoder = [getattr(self, f"ecd{i}") for i in range(n)]
        self._compiled = None
        self._graphs: cuda_graphs.GraphCache | None = None  # enable_cuda_graphs
        self._warned_cpu_half = False  # the float16-on-CPU warning is given once per network
        self._workspace = Workspace()  # CPU buffers and transformed weights (KeepsBuffers)

    @property
    def dtype(self) -> torch.dtype:
        return self.ecd0[0][0].weight.dtype

    @property
    def device(self) -> torch.device:
        return self.ecd0[0][0].weight.device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dtype == torch.float16 and self.device.type == "cpu" and not getattr(self, "_warned_cpu_half", False):
            self._warned_cpu_half = True
            log.warning("GPEN in float16 on the CPU is slow: CPUs without native half-precision arithmetic "
                        "emulate it (a 512 px face took 24 s against 0.7 s in float32 on a 2-core AMD EPYC); "
                        "use fp32, or bf16, on the CPU")
        s = self.size
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or tuple(x.shape[1:]) != (3, s, s):
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise InvalidInputError(f"GPEN-{s} takes face crops (batch, 3, {s}, {s}) in -1..1, got {got}: align "
                                    f"the faces to {s} px (gpen.FaceRestorer does).")
        with torch.inference_mode():
            x = x.to(device=self.device, dtype=self.dtype)
            if self._compiled is not None:
                return self._compiled(x)
            graphs = getattr(self, "_graphs", None)
            if graphs is not None and x.device.type == "cuda":
                return graphs(x)
            with self.buffer_session(x) as ws:
                return self._restore(x, ws)

    def _restore(self, x: torch.Tensor, ws: Session | None = None) -> torch.Tensor:
        if ws is None:
            x = x.contiguous(memory_format=torch.channels_last)
        else:
            x = ws.take(x.shape, x).copy_(x)
        features = []
        for i, stage in enumerate(self._encoder):
            x = cast_activation(x, stage[0][-2].weight.dtype, ws, keep=i > 0)  # features[-1] stays as it is
            done, x = x, stage[0](x, ws)
            if ws is not None and (i == 0 or done is not features[-1]):
                ws.give(done)
            features.append(x)
        latent = self.final_linear(x.flatten(1))
        rgb = self.generator(latent, features[::-1], ws)
        if ws is None:
            return rgb.contiguous()
        return torch.empty(rgb.shape, dtype=rgb.dtype, device=rgb.device).copy_(rgb)  # never a workspace buffer

    def compile(self, **options) -> GPEN:
        """Run the forward pass through ``torch.compile`` from now on (one graph for the whole network).

        ``options`` go to :func:`torch.compile` (e.g. ``mode="max-autotune"``). Compilation happens on
        the first call and again when the batch size first changes (tens of seconds each); outputs
        equal the eager network's to float rounding. ``bench/`` measures whether it pays back on a device: on the
        2-core test CPU it does not (see docs/performance.md). Returns ``self``.
        """
        self._compiled = torch.compile(self._restore, fullgraph=True, **options)
        return self

    def enable_cuda_graphs(self, enabled: bool = True, max_graphs: int = cuda_graphs.MAX_GRAPHS) -> GPEN:
        """Replay CUDA graphs for calls on CUDA from now on (``enabled=False`` drops them): one graph
        captured per batch size, input size and dtype on its first call (each keeps one forward's
        working memory; :mod:`gpen.model.cuda_graphs`). Other devices run as before. Returns ``self``."""
        self._graphs = cuda_graphs.GraphCache(self, lambda x: self._restore(x), max_graphs=max_graphs) \
            if enabled else None
        return self

    def extra_repr(self) -> str:
        c = self.config
        return (f"size={c.size}, style_dim={c.style_dim}, n_mlp={c.n_mlp}, "
                f"channel_multiplier={c.channel_multiplier:g}, narrow={c.narrow:g}")
