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
  and the leaky ReLU runs in place;
* activations are kept channels-last (NHWC), the layout in which CPU convolution and the
  depthwise blur filters are fastest;
* the style path (mapping network, modulation, demodulation statistics) always runs in float32,
  so float16/bfloat16 inference cannot overflow there, while convolutions run in the model's
  dtype.

The forward pass is for inference (it writes into its own intermediate buffers); it runs under
``torch.inference_mode`` and never modifies its input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..compat import is_compiling

SQRT2 = math.sqrt(2.0)
LRELU_SLOPE = 0.2
MAPPING_LR_MUL = 0.01


def blur_kernel(taps: tuple[float, ...] = (1.0, 3.0, 3.0, 1.0), gain: float = 1.0) -> torch.Tensor:
    """The separable FIR kernel outer(taps, taps) normalised to sum ``gain``."""
    k = torch.tensor(taps, dtype=torch.float32)
    k = torch.outer(k, k)
    return k * (gain / k.sum())


@dataclass(frozen=True)
class GPENConfig:
    """Hyper-parameters of one GPEN network, as inferred from its weights.

    ``channels`` maps every resolution (4 .. size) to its feature width; ``channel_multiplier``
    and ``narrow`` are the names the released models use for the same table.
    """

    size: int
    style_dim: int = 512
    n_mlp: int = 8
    channel_multiplier: float = 2
    narrow: float = 1.0
    channels: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.size < 8 or self.size & (self.size - 1):
            raise ValueError(f"GPEN size must be a power of two >= 8, got {self.size}")
        if not self.channels:
            object.__setattr__(self, "channels", default_channels(self.size, self.channel_multiplier, self.narrow))

    @property
    def log_size(self) -> int:
        return int(math.log2(self.size))


def default_channels(size: int, channel_multiplier: float, narrow: float) -> dict[int, int]:
    """The released models' width table: 512 up to 32 px, then shrinking with resolution."""
    base = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * channel_multiplier, 128: 128 * channel_multiplier,
            256: 64 * channel_multiplier, 512: 32 * channel_multiplier, 1024: 16 * channel_multiplier,
            2048: 8 * channel_multiplier, 4096: 4 * channel_multiplier}
    return {r: int(base[r] * narrow) for r in base if r <= size}


def _bias_lrelu(x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """StyleGAN2's fused bias + leaky ReLU(0.2), scaled by sqrt(2) to keep unit variance."""
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return F.leaky_relu(x + bias.to(x.dtype).view(shape), LRELU_SLOPE) * SQRT2


DERIVED_CACHE = "_gpen_derived"  # a module's __dict__ entry: {name: (key, tensor derived from its weights)}


def _derived(module: nn.Module, name: str, source: torch.Tensor, make) -> torch.Tensor:
    """A tensor derived from ``source``, a weight of ``module`` (a :class:`CachingModule`), kept until
    the weight changes (new data, in-place edit, move) or the module is moved or cast."""
    if is_compiling() or torch.jit.is_tracing():  # export/compile see the computation itself
        return make()
    try:
        version = source._version
    except RuntimeError:  # inference tensors (made under torch.inference_mode) have no version counter
        version = -1
    key = (source.data_ptr(), version, source.dtype, source.device)
    caches = module.__dict__.setdefault(DERIVED_CACHE, {})
    cached = caches.get(name)
    if cached is None or cached[0] != key:
        caches.pop(name, None)  # free the stale tensor before making the new one
        with torch.no_grad():
            cached = (key, make())
        caches[name] = cached
    return cached[1]


def drop_derived(module: nn.Module) -> int:
    """Forget every cached derived tensor in ``module`` and its submodules; returns how many there were."""
    dropped = 0
    for m in module.modules():
        dropped += len(m.__dict__.pop(DERIVED_CACHE, None) or ())
    return dropped


class CachingModule(nn.Module):
    """Owner of weights with derived tensors cached: any move or cast (``.to``, ``.cpu``... of it
    alone, as ComfyUI's model patcher does, or of a parent) drops them, so no copy stays on the old
    device; the next forward pass rebuilds them."""

    def _apply(self, fn, *args, **kwargs):
        self.__dict__.pop(DERIVED_CACHE, None)
        return super()._apply(fn, *args, **kwargs)


def _fir(x: torch.Tensor, kernel: torch.Tensor, pad: tuple[int, int], up: int = 1) -> torch.Tensor:
    """Upsample by zero insertion (``up``), pad, and convolve each channel with ``kernel``.

    Implemented as a depthwise (transposed) convolution; ``kernel`` is flipped because the
    filter is a true convolution, not a correlation.
    """
    c = x.shape[1]
    k = torch.flip(kernel, (0, 1)).to(x.dtype)
    kh, kw = k.shape
    weight = k.view(1, 1, kh, kw).expand(c, 1, kh, kw)
    if up == 1:
        if pad[0] == pad[1]:
            return F.conv2d(x, weight, padding=pad[0], groups=c)
        x = F.pad(x, (pad[0], pad[1], pad[0], pad[1]))
        return F.conv2d(x, weight, groups=c)
    # Zero insertion + padding + correlation == transposed convolution with the flipped kernel.
    # Output size: in*up + pad0 + pad1 - kh + 1 (for up=2, pad=(2,1), k=4: 2*in).
    # conv_transpose2d(stride=up, padding=p) crops p from the full output; the full transposed output
    # corresponds to padding the zero-inserted signal by (kh-1) on the left.
    lead = kh - 1 - pad[0]
    out = F.conv_transpose2d(x, torch.flip(weight, (2, 3)), stride=up, groups=c)
    h_full = out.shape[2]
    h_out = x.shape[2] * up + pad[0] + pad[1] - kh + 1
    w_out = x.shape[3] * up + pad[0] + pad[1] - kw + 1
    if lead < 0 or lead + h_out > h_full:
        raise ValueError("unsupported FIR padding")
    return out[:, :, lead:lead + h_out, lead:lead + w_out]


class PixelNorm(nn.Module):
    """Normalise each latent vector to unit root-mean-square."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate (weights scaled at run time), optional fused lrelu."""

    def __init__(self, in_dim: int, out_dim: int, lr_mul: float = 1.0, activation: bool = False,
                 bias_init: float = 0.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The style path is computed in float32 whatever the model's dtype.
        x = x.float()
        w = self.weight.float() * self.scale
        b = self.bias.float() * self.lr_mul
        if self.activation:
            return _bias_lrelu(F.linear(x, w), b)
        return F.linear(x, w, b)


class Blur(nn.Module):
    """Depthwise FIR filter with the checkpoint's ``kernel`` buffer."""

    def __init__(self, pad: tuple[int, int], gain: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("kernel", blur_kernel(gain=gain))
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _fir(x, self.kernel, self.pad)


class Upsample(nn.Module):
    """2x upsampling by zero insertion and FIR filtering (the RGB skip path)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("kernel", blur_kernel(gain=4.0))
        k = self.kernel.shape[0]
        p = k - 2
        self.pad = ((p + 1) // 2 + 1, p // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _fir(x, self.kernel, self.pad, up=2)


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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        *pre, conv, act = self
        for blur in pre:
            x = blur(x)
        # lrelu(z) * sqrt2 == lrelu(sqrt2 * z): the gain and the bias go into the convolution.
        weight = _derived(conv, "scaled_weight", conv.weight, lambda: conv.weight * (conv.scale * SQRT2))
        bias = _derived(act, "scaled_bias", act.bias, lambda: act.bias * SQRT2)
        out = F.conv2d(x, weight.to(x.dtype), bias.to(x.dtype), stride=conv.stride, padding=conv.padding)
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
        return s, torch.rsqrt(s.pow(2) @ wsq.t() + 1e-8)

    def convolve(self, x: torch.Tensor, s: torch.Tensor, x_is_scratch: bool) -> torch.Tensor:
        """conv(x * s, weight) (transposed, stride 2, for upsampling), without demodulation or blur.

        The modulation goes where it costs least: folded into the weight for a single image whose
        activations outnumber the weights, else onto the input (in place when ``x_is_scratch``
        says the caller no longer needs ``x``).
        """
        weight = self.weight[0]
        if x.shape[0] == 1 and weight.numel() < x.numel():
            weight = (weight * s[0].to(weight.dtype)[None, :, None, None]).to(x.dtype)
        else:
            scale = s.to(x.dtype)[:, :, None, None]
            x = x.mul_(scale) if x_is_scratch else x * scale
            weight = weight.to(x.dtype)
        if self.upsample:
            return F.conv_transpose2d(x, weight.transpose(0, 1), stride=2)
        return F.conv2d(x, weight, padding=self.kernel_size // 2)


class NoiseInjection(nn.Module):
    """Strength of GPEN's "noise": the encoder feature, scaled by this learnt scalar, is concatenated
    to the styled convolution's output (computed inside ``StyledConv``)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))


class StyledConv(nn.Module):
    """Modulated conv -> concatenated encoder feature -> bias + lrelu (output has 2x channels)."""

    def __init__(self, in_ch: int, out_ch: int, style_dim: int, upsample: bool = False) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, out_ch, 3, style_dim, upsample=upsample)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_ch * 2)

    def forward(self, x: torch.Tensor, style: torch.Tensor, feature: torch.Tensor,
                x_is_scratch: bool = False) -> torch.Tensor:
        """lrelu(cat(conv(x, style), w_n * feature) + bias) * sqrt2, in one output buffer."""
        conv = self.conv
        s, d = conv.styles(style)
        y = conv.convolve(x, s, x_is_scratch)
        if conv.upsample:
            y = conv.blur(y)
        b, c, h, wd = y.shape
        dt = y.dtype
        bias = (self.activate.bias.float() * SQRT2).to(dt).view(1, -1, 1, 1)
        demod = (d * SQRT2).to(dt)[:, :, None, None]
        gain = (self.noise.weight.float() * SQRT2).to(dt).view(1, 1, 1, 1)
        if torch.jit.is_tracing() or is_compiling():  # tracers and compilers see no writes into views
            out = torch.cat((torch.addcmul(bias[:, :c], y, demod), torch.addcmul(bias[:, c:], feature, gain)), 1)
            return F.leaky_relu(out, LRELU_SLOPE)
        out = torch.empty((b, 2 * c, h, wd), dtype=dt, device=y.device, memory_format=torch.channels_last)
        torch.addcmul(bias[:, :c], y, demod, out=out[:, :c])
        torch.addcmul(bias[:, c:], feature, gain, out=out[:, c:])
        return F.leaky_relu_(out, LRELU_SLOPE)


class ToRGB(nn.Module):
    """1x1 modulated conv (no demodulation) to RGB, plus the upsampled previous RGB skip."""

    def __init__(self, in_ch: int, style_dim: int, upsample: bool = True) -> None:
        super().__init__()
        if upsample:
            self.upsample = Upsample()
        self.conv = ModulatedConv2d(in_ch, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        s, _ = self.conv.styles(style)
        # A 1x1 conv to 3 channels is a batched matrix product over the channels-last pixels.
        weight = (self.conv.weight[0, :, :, 0, 0].float()[None] * s[:, None, :]).to(x.dtype)  # (B, 3, in)
        b, c, h, wd = x.shape
        pixels = x.permute(0, 2, 3, 1).reshape(b, h * wd, c)
        out = torch.baddbmm(self.bias.to(x.dtype).view(1, 1, 3), pixels, weight.transpose(1, 2))
        out = out.view(b, h, wd, 3).permute(0, 3, 1, 2)
        if skip is not None:
            out = out + self.upsample(skip)
        return out


class ConstantInput(nn.Module):
    """The learnt 4x4 starting tensor of the generator."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, 4, 4))

    def forward(self, batch: int) -> torch.Tensor:
        return self.input.expand(batch, -1, -1, -1)


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

    def forward(self, latent: torch.Tensor, features: list[torch.Tensor]) -> torch.Tensor:
        """``latent`` (B, style_dim) before the mapping network; ``features`` from 4x4 upwards."""
        w = self.style(latent)  # one style for every layer
        const = self.input(latent.shape[0]).to(features[0].dtype).contiguous(memory_format=torch.channels_last)
        out = self.conv1(const, w, features[0])
        skip = self.to_rgb1(out, w)
        for j, to_rgb in enumerate(self.to_rgbs):
            feat = features[j + 1]
            # Each activation buffer is read by its RGB skip first, then scaled in place.
            out = self.convs[2 * j](out, w, feat, x_is_scratch=True)
            out = self.convs[2 * j + 1](out, w, feat, x_is_scratch=True)
            skip = to_rgb(out, w, skip)
        return skip


class GPEN(nn.Module):
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

    @property
    def dtype(self) -> torch.dtype:
        return self.ecd0[0][0].weight.dtype

    @property
    def device(self) -> torch.device:
        return self.ecd0[0][0].weight.device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            x = x.to(device=self.device, dtype=self.dtype)
            return (self._compiled or self._restore)(x)

    def _restore(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last)
        features = []
        for stage in self._encoder:
            x = stage(x)
            features.append(x)
        latent = self.final_linear(x.flatten(1))
        return self.generator(latent, features[::-1]).contiguous()

    def compile(self, **options) -> GPEN:
        """Run the forward pass through ``torch.compile`` from now on (one graph for the whole network).

        ``options`` go to :func:`torch.compile` (e.g. ``mode="max-autotune"``). Compilation happens on
        the first call and again when the batch size first changes (tens of seconds each); outputs
        equal the eager network's to float rounding. ``bench/`` measures whether it pays back on a device: on the
        2-core test CPU it does not (see README). Returns ``self``.
        """
        self._compiled = torch.compile(self._restore, fullgraph=True, **options)
        return self

    def extra_repr(self) -> str:
        c = self.config
        return (f"size={c.size}, style_dim={c.style_dim}, n_mlp={c.n_mlp}, "
                f"channel_multiplier={c.channel_multiplier:g}, narrow={c.narrow:g}")
