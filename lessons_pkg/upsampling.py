"""Upsampling for semantic segmentation, from scratch: unpooling, transposed convolution,
the convolution as a matrix, overlap counts, a checkerboard-artifact score, ICNR.

Shape key:
    B: images in a batch          C: channels (Cin, Cout for a layer's input and output)
    H, W: input height and width   Ho, Wo: output height and width
    L, Lo: input and output length (1-D)
    k: kernel size                 s: stride (the upsampling factor)
    p: padding                     op: output_padding (0 <= op < s)
    d: dilation                    G: groups

Every op equals its PyTorch reference (``F.interpolate``, ``F.max_unpool2d``,
``F.conv_transpose1d/2d``); tests/test_upsampling.py checks values and gradients.

Sizes. A convolution maps a length ``n`` to ``floor((n + 2p - d(k-1) - 1) / s) + 1``; the
transposed convolution goes back: ``Lo = (L - 1)s - 2p + d(k - 1) + op + 1``, where
``output_padding`` picks one of the ``s`` input sizes that the convolution maps to ``L``.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .inputs import as_pair


# ============================================================================ argument checks
def _check_ndim(x: Tensor, name: str, ndim: int, layout: str) -> None:
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a Tensor{layout}, got {type(x).__name__}")
    if x.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-D Tensor{layout}, got shape {tuple(x.shape)}")


def _shown(values: tuple[int, ...]):
    """(2, 2) -> 2 and (2, 3) -> (2, 3), for messages that show what the caller passed."""
    return values[0] if len(set(values)) == 1 else values


def _check_positive(values: tuple[int, ...], name: str) -> None:
    if any(v < 1 for v in values):
        raise ValueError(f"{name} must be >= 1, got {_shown(values)}")


def _check_nonnegative(values: tuple[int, ...], name: str) -> None:
    if any(v < 0 for v in values):
        raise ValueError(f"{name} must be >= 0, got {_shown(values)}")


# ============================================================================ unpooling
def nearest_unpool(x: Tensor, scale: int | tuple[int, int]) -> Tensor:
    """Nearest-neighbour unpooling: each value copied into a ``scale x scale`` block.

    Args:
        x (Tensor[B, C, H, W]): the input.
        scale: the integer upsampling factor (or a pair (sh, sw)).
    Returns:
        Tensor[B, C, H * sh, W * sw]; equals ``F.interpolate(x, scale_factor=scale, mode="nearest")``.
    """
    _check_ndim(x, "x", 4, "[B, C, H, W]")
    sh, sw = as_pair(scale, "scale")
    _check_positive((sh, sw), "scale")
    return x.repeat_interleave(sh, dim=2).repeat_interleave(sw, dim=3)


def bed_of_nails_unpool(x: Tensor, scale: int | tuple[int, int]) -> Tensor:
    """"Bed of nails" unpooling: each value at the **top-left** corner of its ``scale x scale``
    block, zeros elsewhere (output pixel ``(i * sh, j * sw)`` holds ``x[..., i, j]``).

    Args:
        x (Tensor[B, C, H, W]): the input.
        scale: the integer upsampling factor (or a pair (sh, sw)).
    Returns:
        Tensor[B, C, H * sh, W * sw]. It equals ``F.conv_transpose2d`` with stride ``scale`` and a
        kernel that is 1 at its top-left and 0 elsewhere, and ``F.max_unpool2d`` with every switch
        at the top-left.
    """
    _check_ndim(x, "x", 4, "[B, C, H, W]")
    sh, sw = as_pair(scale, "scale")
    _check_positive((sh, sw), "scale")
    B, C, H, W = x.shape
    out = x.new_zeros(B, C, H * sh, W * sw)
    out[:, :, ::sh, ::sw] = x
    return out


def max_unpool(x: Tensor, indices: Tensor, kernel_size: int | tuple[int, int],
               stride: int | tuple[int, int] | None = None, padding: int | tuple[int, int] = 0,
               output_size: tuple[int, ...] | None = None) -> Tensor:
    """Max unpooling: each value goes back to where the max pooling found its maximum (the
    "switches"), zeros elsewhere. Same semantics as ``F.max_unpool2d``.

    Args:
        x (Tensor[B, C, H, W]): the values to place (the pooled map, or features of its size).
        indices (Tensor[B, C, H, W] int64): from ``F.max_pool2d(..., return_indices=True)``: for each
            pooled value, the flat position ``row * Wo + col`` of its maximum in the unpooled plane.
        kernel_size, stride (default: kernel_size), padding: those of the max pooling.
        output_size: (Ho, Wo), or a size whose last two entries are (Ho, Wo); by default
            ``((H - 1) * s - 2p + k)`` in each direction (the pooling's input size when it divides).
    Returns:
        Tensor[B, C, Ho, Wo].
    """
    _check_ndim(x, "x", 4, "[B, C, H, W]")
    if not isinstance(indices, Tensor) or indices.shape != x.shape:
        got = tuple(indices.shape) if isinstance(indices, Tensor) else type(indices).__name__
        raise ValueError(f"indices must have the shape of x, {tuple(x.shape)}, got {got}")
    if indices.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"indices must be an integer tensor (int64), got {indices.dtype}")
    kh, kw = as_pair(kernel_size, "kernel_size")
    sh, sw = as_pair(kernel_size if stride is None else stride, "stride")
    ph, pw = as_pair(padding, "padding")
    _check_positive((kh, kw), "kernel_size")
    _check_positive((sh, sw), "stride")
    _check_nonnegative((ph, pw), "padding")
    B, C, H, W = x.shape
    if output_size is None:
        Ho, Wo = (H - 1) * sh - 2 * ph + kh, (W - 1) * sw - 2 * pw + kw
    else:
        Ho, Wo = (int(v) for v in tuple(output_size)[-2:])
    if Ho < 1 or Wo < 1:
        raise ValueError(f"output_size must be positive, got {(Ho, Wo)}")
    flat = indices.reshape(B, C, H * W).long()
    if flat.numel() and (flat.min() < 0 or flat.max() >= Ho * Wo):
        raise ValueError(f"indices must lie in [0, {Ho * Wo}) for an output of size {(Ho, Wo)}, "
                         f"got values in [{int(flat.min())}, {int(flat.max())}] (pass output_size=, the size of the "
                         f"pooling's input)")
    out = x.new_zeros(B, C, Ho * Wo)
    out = out.scatter(2, flat, x.reshape(B, C, H * W))  # out[b, c, indices[b, c, i]] = x[b, c, i]
    return out.reshape(B, C, Ho, Wo)


# ============================================================================ transposed convolution
def conv_transpose_output_size(size: int, kernel_size: int, stride: int = 1, padding: int = 0,
                               output_padding: int = 0, dilation: int = 1) -> int:
    """Lo = (L - 1) s - 2p + d (k - 1) + op + 1, the length a transposed convolution produces."""
    return (size - 1) * stride - 2 * padding + dilation * (kernel_size - 1) + output_padding + 1


def conv_transpose2d_scatter(x: Tensor, weight: Tensor, bias: Tensor | None = None,
                             stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] = 0,
                             output_padding: int | tuple[int, int] = 0, groups: int = 1,
                             dilation: int | tuple[int, int] = 1) -> Tensor:
    """Transposed convolution as a scatter-add: input pixel ``(i, j)`` adds a copy of the kernel,
    scaled by its value, into the output at ``(i * s, j * s)`` (kernel taps ``d`` apart); the
    sum is cropped by ``padding`` at each border and extended by ``output_padding`` at the end.

    Vectorized: one matrix product makes every scaled kernel copy (``cols``), and ``F.fold``
    (col2im, a scatter-add) sums them into place. Same arguments and result as
    ``F.conv_transpose2d``.

    Args:
        x (Tensor[B, Cin, H, W]): the input.
        weight (Tensor[Cin, Cout / G, kh, kw]): the kernel, laid out like ``F.conv_transpose2d``'s.
        bias (Tensor[Cout] | None).
        stride, padding, output_padding (0 <= op < max(s, d)), groups, dilation.
    Returns:
        Tensor[B, Cout, Ho, Wo] with Ho = (H - 1) sh - 2 ph + dh (kh - 1) + oph + 1 (and so Wo).
    """
    _check_ndim(x, "x", 4, "[B, Cin, H, W]")
    _check_ndim(weight, "weight", 4, "[Cin, Cout / groups, kh, kw]")
    s, p, op, d = (as_pair(stride, "stride"), as_pair(padding, "padding"),
                   as_pair(output_padding, "output_padding"), as_pair(dilation, "dilation"))
    _check_positive(s, "stride")
    _check_positive(d, "dilation")
    _check_nonnegative(p, "padding")
    _check_nonnegative(op, "output_padding")
    if any(o >= max(si, di) for o, si, di in zip(op, s, d)):
        raise ValueError(f"output_padding must be smaller than stride or dilation, got output_padding={op}, "
                         f"stride={s}, dilation={d}")
    if not isinstance(groups, int) or groups < 1:
        raise ValueError(f"groups must be a positive int, got {groups!r}")
    B, Cin, H, W = x.shape
    if weight.shape[0] != Cin:
        raise ValueError(f"weight must have Cin = {Cin} rows (the input's channels), got shape {tuple(weight.shape)}")
    if Cin % groups:
        raise ValueError(f"groups must divide the input channels {Cin}, got groups={groups}")
    G, kh, kw = groups, weight.shape[2], weight.shape[3]
    Cout = weight.shape[1] * G
    if bias is not None and bias.shape != (Cout,):
        raise ValueError(f"bias must have shape ({Cout},), got {tuple(bias.shape)}")
    Ho = conv_transpose_output_size(H, kh, s[0], p[0], op[0], d[0])
    Wo = conv_transpose_output_size(W, kw, s[1], p[1], op[1], d[1])
    if Ho < 1 or Wo < 1:
        raise ValueError(f"padding {p} leaves no output for a {H}x{W} input and a {kh}x{kw} kernel")
    # cols[b, (co, ky, kx), (i, j)] = sum_ci x[b, ci, i, j] * weight[ci, co, ky, kx]: the kernel
    # copy that input pixel (i, j) contributes, for each output channel co (within its group).
    xg = x.reshape(B, G, Cin // G, H * W)
    wg = weight.reshape(G, Cin // G, (Cout // G) * kh * kw)
    cols = torch.einsum("bgil,gio->bgol", xg, wg).reshape(B, Cout * kh * kw, H * W)
    # fold (col2im) adds each copy at (i * s, j * s) into the full canvas; then output_padding
    # extends it at the end (zeros: no copy reaches there) and padding crops p at each side.
    full = ((H - 1) * s[0] + d[0] * (kh - 1) + 1, (W - 1) * s[1] + d[1] * (kw - 1) + 1)
    canvas = F.fold(cols, full, (kh, kw), dilation=d, stride=s)
    canvas = F.pad(canvas, (0, op[1], 0, op[0]))
    out = canvas[:, :, p[0]:p[0] + Ho, p[1]:p[1] + Wo]
    if bias is not None:
        out = out + bias.view(1, Cout, 1, 1)
    return out


def conv_transpose1d_scatter(x: Tensor, weight: Tensor, bias: Tensor | None = None, stride: int = 1,
                             padding: int = 0, output_padding: int = 0, groups: int = 1,
                             dilation: int = 1) -> Tensor:
    """1-D transposed convolution as a scatter-add; same arguments and result as ``F.conv_transpose1d``.

    Args:
        x (Tensor[B, Cin, L]); weight (Tensor[Cin, Cout / G, k]); bias (Tensor[Cout] | None).
    Returns:
        Tensor[B, Cout, Lo] with Lo = (L - 1) s - 2p + d (k - 1) + op + 1.
    """
    _check_ndim(x, "x", 3, "[B, Cin, L]")
    _check_ndim(weight, "weight", 3, "[Cin, Cout / groups, k]")
    for name, value in (("stride", stride), ("padding", padding), ("output_padding", output_padding),
                        ("dilation", dilation)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"{name} must be an int for a 1-D transposed convolution, got {value!r}")
    # A 1-D signal is a 2-D one of height 1.
    out = conv_transpose2d_scatter(x[:, :, None, :], weight[:, :, None, :], bias, (1, stride), (0, padding),
                                   (0, output_padding), groups, (1, dilation))
    return out[:, :, 0, :]


class ConvTranspose2dScatter(nn.ConvTranspose2d):
    """``nn.ConvTranspose2d`` (same parameters, same initialization) computed by
    :func:`conv_transpose2d_scatter`; see there."""

    def forward(self, x: Tensor, output_size=None) -> Tensor:
        if output_size is not None:
            raise ValueError("ConvTranspose2dScatter takes output_padding in its constructor, not output_size")
        return conv_transpose2d_scatter(x, self.weight, self.bias, self.stride, self.padding,
                                        self.output_padding, self.groups, self.dilation)


# ============================================================================ the matrix view
def conv_matrix(input_size: int | tuple[int, int], weight: Tensor, stride: int | tuple[int, int] = 1,
                padding: int | tuple[int, int] = 0) -> Tensor:
    """The dense matrix ``M`` of a convolution (cross-correlation, like ``F.conv1d/2d``), built
    entry by entry: ``M[(co, oy, ox), (ci, iy, ix)] = weight[co, ci, ky, kx]`` whenever input pixel
    ``(iy, ix) = (oy * s + ky - p, ox * s + kx - p)`` lies inside the input.

    Then for one image ``x`` (Tensor[Cin, *input_size]):
        conv(x)              == (M @ x.flatten()).reshape(Cout, Ho, Wo)
        conv_transpose(y)    == (M.T @ y.flatten()).reshape(Cin, *input_size)
    with the same ``weight`` tensor for both (``F.conv_transpose2d`` reads it as [Cin', Cout'] =
    [Cout, Cin]) and the ``output_padding`` that gives back ``input_size``. The transposed
    convolution is the transpose of this matrix, which is also why it is the gradient of the
    convolution with respect to its input.

    Args:
        input_size: L (1-D, weight Tensor[Cout, Cin, k]) or (H, W) (2-D, weight Tensor[Cout, Cin, kh, kw]).
        weight: the convolution's kernel, laid out like ``F.conv1d/2d``'s.
    Returns:
        Tensor[Cout * Ho * Wo, Cin * H * W] (Tensor[Cout * Lo, Cin * L] in 1-D), weight's dtype.
    """
    one_d = isinstance(input_size, int)
    if one_d:
        _check_ndim(weight, "weight", 3, "[Cout, Cin, k] (input_size is an int: 1-D)")
        if not isinstance(stride, int) or not isinstance(padding, int):
            raise ValueError(f"stride and padding must be ints in 1-D, got stride={stride!r}, padding={padding!r}")
        weight, size = weight[:, :, None, :], (1, input_size)
        s, p = (1, stride), (0, padding)
    else:
        _check_ndim(weight, "weight", 4, "[Cout, Cin, kh, kw] (input_size is (H, W): 2-D)")
        size, s, p = as_pair(tuple(input_size), "input_size"), as_pair(stride, "stride"), as_pair(padding, "padding")
    _check_positive(size, "input_size")
    _check_positive(s, "stride")
    _check_nonnegative(p, "padding")
    Cout, Cin, kh, kw = weight.shape
    H, W = size
    Ho, Wo = (H + 2 * p[0] - kh) // s[0] + 1, (W + 2 * p[1] - kw) // s[1] + 1
    if Ho < 1 or Wo < 1:
        raise ValueError(f"a {kh}x{kw} kernel does not fit an input of size {size} with padding {p}")
    co, ci, ky, kx, oy, ox = torch.meshgrid(*(torch.arange(n, device=weight.device)
                                              for n in (Cout, Cin, kh, kw, Ho, Wo)), indexing="ij")
    iy, ix = oy * s[0] + ky - p[0], ox * s[1] + kx - p[1]
    inside = (iy >= 0) & (iy < H) & (ix >= 0) & (ix < W)
    rows = ((co * Ho + oy) * Wo + ox)[inside]
    cols = ((ci * H + iy) * W + ix)[inside]
    values = weight[co[inside], ci[inside], ky[inside], kx[inside]]
    matrix = weight.new_zeros(Cout * Ho * Wo, Cin * H * W)
    return matrix.index_put((rows, cols), values, accumulate=True)


# ============================================================================ checkerboard artifacts
def overlap_count(kernel_size: int | tuple[int, int], stride: int | tuple[int, int],
                  input_size: int | tuple[int, int], padding: int | tuple[int, int] = 0) -> Tensor:
    """How many kernel placements of a transposed convolution cover each output pixel: the
    transposed convolution of an all-ones input with an all-ones kernel.

    Uneven (a checkerboard) when ``kernel_size`` is not a multiple of ``stride``; even in the
    interior when it is. Borders within ``kernel_size - stride`` of the edge see fewer copies.

    Args:
        kernel_size, stride, padding: ints (1-D) or pairs (2-D).
        input_size: L (1-D) or (H, W) (2-D).
    Returns:
        Tensor[Lo] or Tensor[Ho, Wo], float32 counts.
    """
    if isinstance(input_size, int):
        for name, value in (("kernel_size", kernel_size), ("stride", stride), ("padding", padding)):
            if not isinstance(value, int):
                raise ValueError(f"{name} must be an int when input_size is an int (1-D), got {value!r}")
        _check_positive((input_size,), "input_size")
        _check_positive((kernel_size,), "kernel_size")
        return conv_transpose1d_scatter(torch.ones(1, 1, input_size), torch.ones(1, 1, kernel_size),
                                        stride=stride, padding=padding)[0, 0]
    size, k = as_pair(tuple(input_size), "input_size"), as_pair(kernel_size, "kernel_size")
    _check_positive(size, "input_size")
    _check_positive(k, "kernel_size")
    return conv_transpose2d_scatter(torch.ones(1, 1, *size), torch.ones(1, 1, *k), stride=stride,
                                    padding=padding)[0, 0]


def checkerboard_score(y: Tensor, stride: int | tuple[int, ...], border: int = 0) -> float:
    """The share of a map's energy at the stride frequencies: a number for checkerboard artifacts.

    Split the pixels into ``s^n`` phases by their position modulo the stride (in 2-D, the
    ``(i mod s, j mod s)`` classes) and take each phase's mean ``m_p``; with ``m`` their mean,

        score = mean_p (m_p - m)^2 / mean(y^2)        in [0, 1].

    By Parseval this is exactly the energy of the discrete Fourier transform at the non-zero
    multiples of the stride frequency ``1/s`` divided by the total energy (when the cropped size is
    a multiple of ``s``). Feed the output of an upsampling layer for a **constant** (or smooth)
    input: an artifact-free layer gives a map with no period-``s`` pattern (score 0), a layer with
    uneven overlap gives a checkerboard (score > 0). Scores of all leading maps are pooled (sums
    of energies over B and C before the ratio).

    Args:
        y (Tensor[..., L] with a 1-D stride, or Tensor[..., H, W] with a 2-D stride (int = both)).
        stride: the upsampling factor s (int, or one per spatial dimension).
        border: pixels dropped at each side first (the borders see fewer kernel copies); the
            rest is cropped at its end to a multiple of s.
    Returns:
        float in [0, 1]; 0 for a constant map.
    """
    if not isinstance(y, Tensor):
        raise ValueError(f"y must be a Tensor[..., H, W], got {type(y).__name__}")
    if isinstance(stride, int):
        strides = (stride,) * min(2, y.ndim)
    else:
        strides = tuple(int(v) for v in stride)
        if len(strides) not in (1, 2):
            raise ValueError(f"stride must be an int or have 1 or 2 entries, got {stride!r}")
    _check_positive(strides, "stride")
    n = len(strides)
    if y.ndim < n:
        raise ValueError(f"y must have at least {n} dimensions for a {n}-D stride, got shape {tuple(y.shape)}")
    if not isinstance(border, int) or border < 0:
        raise ValueError(f"border must be an int >= 0, got {border!r}")
    y = y.detach().double()
    for dim, s in zip(range(y.ndim - n, y.ndim), strides):
        size = y.shape[dim] - 2 * border
        keep = size - size % s
        if keep < s:
            raise ValueError(f"after dropping border={border} at each side, dimension {dim} of size "
                             f"{y.shape[dim]} keeps fewer than stride={s} pixels")
        y = y.narrow(dim, border, keep)
    maps = y.reshape(-1, *y.shape[y.ndim - n:])
    if n == 1:
        phases = maps.reshape(len(maps), -1, strides[0]).mean(1)                     # [M, s]
    else:
        h, w = maps.shape[1:]
        phases = maps.reshape(len(maps), h // strides[0], strides[0], w // strides[1], strides[1]).mean((1, 3))
    phases = phases.reshape(len(maps), -1)
    periodic = (phases - phases.mean(1, keepdim=True)).pow(2).mean(1).sum()
    total = maps.reshape(len(maps), -1).pow(2).mean(1).sum()
    return float(periodic / total) if total > 0 else 0.0


# ============================================================================ layers that upsample
@torch.no_grad()
def icnr_(weight: Tensor, scale: int, init: Callable[[Tensor], Tensor] = nn.init.kaiming_normal_) -> Tensor:
    """ICNR initialization (Aitken et al. 2017) of a sub-pixel convolution, in place.

    A sub-pixel layer is a convolution to ``Cout * scale^2`` channels followed by
    ``nn.PixelShuffle(scale)``, which sends channel ``c * scale^2 + i * scale + j`` to position
    ``(i, j)`` of each output block of channel ``c``. ICNR draws one kernel per output channel
    (``init``) and copies it to all ``scale^2`` channels of its block, so that at initialization
    ``PixelShuffle(conv(x))`` equals nearest-neighbour upsampling of a plain convolution: no
    checkerboard at the start of training.

    Args:
        weight (Tensor[Cout * scale^2, Cin, kh, kw]): the sub-pixel convolution's kernel.
        scale: the PixelShuffle factor.
    Returns:
        weight, filled.
    """
    _check_ndim(weight, "weight", 4, "[Cout * scale^2, Cin, kh, kw]")
    if not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be an int >= 1, got {scale!r}")
    if weight.shape[0] % (scale * scale):
        raise ValueError(f"weight must have a multiple of scale^2 = {scale * scale} output channels, "
                         f"got {weight.shape[0]}")
    sub = torch.empty(weight.shape[0] // scale**2, *weight.shape[1:], dtype=weight.dtype, device=weight.device)
    init(sub)
    return weight.copy_(sub.repeat_interleave(scale * scale, dim=0))


def bilinear_kernel(scale: int, channels: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """The transposed-convolution kernel that upsamples by ``scale`` as bilinear interpolation
    does (FCN's initialization, Long et al. 2015).

    Returns Tensor[channels, channels, 2 scale, 2 scale]: each channel to itself (zeros across
    channels), a tent 1 - |x - centre| / scale in each direction. With ``stride=scale`` and
    ``padding=scale // 2`` (``scale`` even) the layer maps h -> scale h and equals
    ``F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)`` away from the
    border (at the border it interpolates towards zero instead of repeating the edge).
    """
    if not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be an int >= 1, got {scale!r}")
    size = 2 * scale
    centre = (size - 1) / 2
    ramp = 1 - (torch.arange(size, dtype=torch.float64) - centre).abs() / scale   # [size]
    tent = (ramp[:, None] * ramp[None, :]).to(dtype)
    weight = torch.zeros(channels, channels, size, size, dtype=dtype)
    weight[torch.arange(channels), torch.arange(channels)] = tent
    return weight


def bilinear_upsampler(channels: int, scale: int, learnable: bool = True,
                       depthwise: bool = False) -> nn.ConvTranspose2d:
    """``nn.ConvTranspose2d`` by ``scale`` (even), initialized to bilinear interpolation
    (:func:`bilinear_kernel`); ``learnable=False`` keeps it fixed. Tensor[B, C, h, w] ->
    Tensor[B, C, scale h, scale w].

    ``depthwise=False``: a full C x C kernel whose diagonal is the tent (C * C * (2 scale)^2
    weights; learned, the cross-channel weights leave zero). ``depthwise=True``: one kernel
    per channel (``groups=C``, C * (2 scale)^2 weights), what the FCN reference code's
    Deconvolution with ``group = num_output`` is; its reference models keep it fixed."""
    if scale % 2:
        raise ValueError(f"scale must be even (the kernel is 2 scale wide, padded by scale / 2), got {scale}")
    groups = channels if depthwise else 1
    layer = nn.ConvTranspose2d(channels, channels, 2 * scale, stride=scale, padding=scale // 2, bias=False,
                               groups=groups)
    with torch.no_grad():
        kernel = bilinear_kernel(scale, channels)
        layer.weight.copy_(kernel[torch.arange(channels), torch.arange(channels)][:, None] if depthwise
                           else kernel)
    layer.weight.requires_grad_(learnable)
    return layer


# ============================================================================ one rule for "a pattern"
PATTERN_RATIO = 0.1
"""A stride pattern is **strong** when its amplitude is at least this fraction of the maps'
own variation (:func:`stride_pattern`), **little** below it: the one rule of both upsampling
chapters."""


def stride_pattern(y: Tensor, stride: int, border: int = 0) -> dict:
    """How strong the period-``stride`` pattern of a stack of maps is, and the verdict.

    ``y`` is Tensor[N, ..., H, W]: N probes (one constant input, or many textured images), each
    with the same leading channels. Split the pixels into the ``stride^2`` phases
    ``(i mod s, j mod s)``; take each phase's mean in every map, **average it over the N
    probes**, subtract the mean over the phases, and take the root mean square over phases and
    channels: the ``amplitude``. Image content that is not aligned to the stride grid (shapes
    at random positions, noise) averages out over the probes; a pattern the layer stamps at the
    same phase everywhere does not. ``variation`` is the standard deviation of each map about
    its own mean (pooled), the signal the pattern rides on; ``verdict`` is "strong" when
    ``amplitude >= PATTERN_RATIO * variation``, else "little".

    Args:
        y (Tensor[N, ..., H, W]); stride: s; border: pixels dropped at each side first (the
            rest is cropped at its end to a multiple of s).
    Returns:
        {"amplitude": float, "variation": float, "ratio": amplitude / variation (0 when
        variation is 0), "verdict": "strong" | "little"}.
    """
    if not isinstance(y, Tensor) or y.ndim < 3:
        raise ValueError(f"y must be a Tensor[N, ..., H, W] (N probes), got "
                         f"{tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__}")
    if not isinstance(stride, int) or stride < 1:
        raise ValueError(f"stride must be an int >= 1, got {stride!r}")
    if not isinstance(border, int) or border < 0:
        raise ValueError(f"border must be an int >= 0, got {border!r}")
    y = y.detach().double()
    if border:
        y = y[..., border:-border, border:-border]
    h, w = (n - n % stride for n in y.shape[-2:]) if min(y.shape[-2:]) > 0 else (0, 0)
    if h < stride or w < stride:
        raise ValueError(f"y keeps fewer than stride={stride} pixels per side after border={border}")
    y = y[..., :h, :w].reshape(y.shape[0], -1, h, w)                      # [N, M, h, w]
    blocks = y.reshape(*y.shape[:2], h // stride, stride, w // stride, stride)
    phases = blocks.mean((2, 4)).mean(0).reshape(y.shape[1], -1)         # [M, s * s]
    amplitude = float((phases - phases.mean(1, keepdim=True)).pow(2).mean().sqrt())
    variation = float((y - y.mean((2, 3), keepdim=True)).pow(2).mean().sqrt())
    ratio = amplitude / variation if variation > 0 else 0.0
    strong = amplitude >= PATTERN_RATIO * variation and amplitude > 0
    return {"amplitude": amplitude, "variation": variation, "ratio": ratio,
            "verdict": "strong" if strong else "little"}


class SubPixelConv(nn.Module):
    """Sub-pixel convolution (Shi et al. 2016): conv to ``out * scale^2`` channels, then
    ``nn.PixelShuffle(scale)``. Tensor[B, Cin, H, W] -> Tensor[B, Cout, H * scale, W * scale].
    ``icnr=True`` initializes it with :func:`icnr_` (checkerboard-free at initialization)."""

    def __init__(self, in_channels: int, out_channels: int, scale: int = 2, kernel_size: int = 3,
                 icnr: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels * scale * scale, kernel_size, padding=kernel_size // 2)
        self.shuffle = nn.PixelShuffle(scale)
        if icnr:
            icnr_(self.conv.weight, scale)
            nn.init.zeros_(self.conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.shuffle(self.conv(x))


class ResizeConv(nn.Module):
    """Resize, then convolve (Odena et al. 2016): ``F.interpolate`` by ``scale`` (``mode`` =
    "nearest" or "bilinear"), then a stride-1 convolution that keeps the size.
    Tensor[B, Cin, H, W] -> Tensor[B, Cout, H * scale, W * scale]."""

    def __init__(self, in_channels: int, out_channels: int, scale: int = 2, mode: str = "nearest",
                 kernel_size: int = 3):
        super().__init__()
        if mode not in ("nearest", "bilinear"):
            raise ValueError(f"mode must be 'nearest' or 'bilinear', got {mode!r}")
        self.scale, self.mode = scale, mode
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)

    def forward(self, x: Tensor) -> Tensor:
        if self.mode == "nearest":
            x = nearest_unpool(x, self.scale)
        else:
            x = F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return self.conv(x)
