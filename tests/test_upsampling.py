"""Tests of lessons_pkg.upsampling against PyTorch's references (F.interpolate, F.max_unpool2d,
F.conv_transpose1d/2d, F.conv1d/2d), plus the checkerboard score and ICNR."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from lessons_pkg import exercises, upsampling as U


pytestmark = pytest.mark.usefixtures("one_thread")


# ============================================================================= unpooling
@pytest.mark.parametrize("scale", [1, 2, 3, (2, 3)])
def test_nearest_unpool_matches_interpolate(scale, device):
    x = torch.randn(2, 3, 5, 4, device=device)
    torch.testing.assert_close(U.nearest_unpool(x, scale), F.interpolate(x, scale_factor=scale, mode="nearest"))


@pytest.mark.parametrize("scale", [2, 3])
def test_bed_of_nails_is_top_left_and_a_transposed_conv(scale, device):
    x = torch.randn(2, 3, 4, 5, device=device)
    y = U.bed_of_nails_unpool(x, scale)
    assert y.shape == (2, 3, 4 * scale, 5 * scale)
    torch.testing.assert_close(y[:, :, ::scale, ::scale], x)
    assert (y != 0).sum() == (x != 0).sum()  # zeros elsewhere
    nail = torch.zeros(3, 1, scale, scale, device=device)
    nail[:, :, 0, 0] = 1
    torch.testing.assert_close(y, F.conv_transpose2d(x, nail, stride=scale, groups=3))


def test_lecture_example_2x2_to_4x4():
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    assert U.nearest_unpool(x, 2)[0, 0].tolist() == [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]]
    assert U.bed_of_nails_unpool(x, 2)[0, 0].tolist() == [[1, 0, 2, 0], [0, 0, 0, 0], [3, 0, 4, 0], [0, 0, 0, 0]]


@pytest.mark.parametrize("kernel_size,stride,padding,size", [
    (2, None, 0, (8, 8)), (2, 2, 0, (7, 9)), (3, 2, 1, (9, 8)), (3, 3, 0, (9, 10)), ((2, 3), (2, 3), 0, (6, 9)),
    (3, 1, 1, (5, 6)),
])
def test_max_unpool_matches_reference(kernel_size, stride, padding, size, device):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, *size, generator=g).to(device)
    pooled, indices = F.max_pool2d(x, kernel_size, stride, padding, return_indices=True)
    for output_size in (None, x.shape[-2:]):
        k, s = torch.tensor(kernel_size).expand(2), torch.tensor(stride or kernel_size).expand(2)
        default = (torch.tensor(pooled.shape[-2:]) - 1) * s - 2 * padding + k
        if output_size is None and tuple(default.tolist()) != size:
            continue   # the default size is not the pooling's input size: it needs output_size
        want = F.max_unpool2d(pooled, indices, kernel_size, stride, padding, output_size)
        torch.testing.assert_close(U.max_unpool(pooled, indices, kernel_size, stride, padding, output_size), want)


def test_max_unpool_default_size_too_small_says_pass_output_size():
    x = torch.zeros(1, 1, 7, 7)
    x[..., 5, 5] = 1.0  # a max at flat index 5 * 7 + 5 = 40: outside the default 6 x 6 output
    pooled, indices = F.max_pool2d(x, 2, return_indices=True)
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 36\).*pass output_size="):
        U.max_unpool(pooled, indices, 2)
    assert U.max_unpool(pooled, indices, 2, output_size=(7, 7)).shape == (1, 1, 7, 7)


def test_max_unpool_gradient_matches_reference():
    x = torch.randn(1, 2, 6, 6)
    pooled, indices = F.max_pool2d(x, 2, return_indices=True)
    a, b = pooled.clone().requires_grad_(), pooled.clone().requires_grad_()
    seed = torch.randn(1, 2, 6, 6)
    (U.max_unpool(a, indices, 2) * seed).sum().backward()
    (F.max_unpool2d(b, indices, 2) * seed).sum().backward()
    torch.testing.assert_close(a.grad, b.grad)


def test_unpooling_bad_input_names_the_argument():
    x = torch.randn(1, 1, 2, 2)
    with pytest.raises(ValueError, match=r"x must be a 4-D Tensor\[B, C, H, W\], got shape \(2, 2\)"):
        U.nearest_unpool(x[0, 0], 2)
    with pytest.raises(ValueError, match="scale must be >= 1, got 0"):
        U.bed_of_nails_unpool(x, 0)
    with pytest.raises(ValueError, match=r"indices must have the shape of x, \(1, 1, 2, 2\), got \(1, 1, 2, 1\)"):
        U.max_unpool(x, torch.zeros(1, 1, 2, 1, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="indices must lie in"):
        U.max_unpool(x, torch.full((1, 1, 2, 2), 99), 2)
    with pytest.raises(ValueError, match="stride must be >= 1"):
        U.max_unpool(x, torch.zeros(1, 1, 2, 2, dtype=torch.long), 2, stride=0)


# ============================================================================= transposed convolution
@settings(max_examples=60, deadline=None)
@given(b=st.integers(1, 2), cin=st.integers(1, 3), cout=st.integers(1, 3), groups=st.sampled_from([1, 2]),
       h=st.integers(1, 6), w=st.integers(1, 6), kh=st.integers(1, 4), kw=st.integers(1, 4),
       sh=st.integers(1, 3), sw=st.integers(1, 3), ph=st.integers(0, 2), pw=st.integers(0, 2),
       oph=st.integers(0, 2), opw=st.integers(0, 2), dh=st.integers(1, 2), dw=st.integers(1, 2),
       bias=st.booleans(), seed=st.integers(0, 2**16))
def test_conv_transpose2d_scatter_matches_reference(b, cin, cout, groups, h, w, kh, kw, sh, sw, ph, pw, oph, opw,
                                                    dh, dw, bias, seed):
    oph, opw = oph % max(sh, dh), opw % max(sw, dw)
    if min(U.conv_transpose_output_size(h, kh, sh, ph, oph, dh),
           U.conv_transpose_output_size(w, kw, sw, pw, opw, dw)) < 1:
        return
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, cin * groups, h, w, generator=g, dtype=torch.float64)
    weight = torch.randn(cin * groups, cout, kh, kw, generator=g, dtype=torch.float64)
    bias_ = torch.randn(cout * groups, generator=g, dtype=torch.float64) if bias else None
    args = ((sh, sw), (ph, pw), (oph, opw), groups, (dh, dw))
    torch.testing.assert_close(U.conv_transpose2d_scatter(x, weight, bias_, *args),
                               F.conv_transpose2d(x, weight, bias_, *args))


@settings(max_examples=60, deadline=None)
@given(cin=st.integers(1, 3), cout=st.integers(1, 3), length=st.integers(1, 8), k=st.integers(1, 5),
       stride=st.integers(1, 3), padding=st.integers(0, 2), op=st.integers(0, 2), dilation=st.integers(1, 2),
       seed=st.integers(0, 2**16))
def test_conv_transpose1d_scatter_matches_reference(cin, cout, length, k, stride, padding, op, dilation, seed):
    op = op % max(stride, dilation)
    if U.conv_transpose_output_size(length, k, stride, padding, op, dilation) < 1:
        return
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, cin, length, generator=g, dtype=torch.float64)
    weight = torch.randn(cin, cout, k, generator=g, dtype=torch.float64)
    bias = torch.randn(cout, generator=g, dtype=torch.float64)
    torch.testing.assert_close(U.conv_transpose1d_scatter(x, weight, bias, stride, padding, op, 1, dilation),
                               F.conv_transpose1d(x, weight, bias, stride, padding, op, 1, dilation))


def test_conv_transpose_scatter_on_device(device):
    x, w = torch.randn(2, 3, 5, 6, device=device), torch.randn(3, 4, 3, 3, device=device)
    torch.testing.assert_close(U.conv_transpose2d_scatter(x, w, stride=2, padding=1, output_padding=1),
                               F.conv_transpose2d(x, w, stride=2, padding=1, output_padding=1))


def test_conv_transpose_scatter_gradients_match_reference():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64)
    w = torch.randn(3, 2, 3, 3, generator=g, dtype=torch.float64)
    b = torch.randn(2, generator=g, dtype=torch.float64)
    grads = []
    for fn in (U.conv_transpose2d_scatter, F.conv_transpose2d):
        xs, ws, bs = (t.clone().requires_grad_() for t in (x, w, b))
        y = fn(xs, ws, bs, 2, 1, 1)
        (y * torch.linspace(-1, 1, y.numel(), dtype=torch.float64).view_as(y)).sum().backward()
        grads.append((xs.grad, ws.grad, bs.grad))
    for mine, ref in zip(*grads):
        torch.testing.assert_close(mine, ref)
    assert torch.autograd.gradcheck(lambda a: U.conv_transpose1d_scatter(a, w[:, :, 0], stride=2),
                                    (x[:, :, 0].requires_grad_(),))


def test_conv_transpose_module_matches_nn():
    torch.manual_seed(0)
    ref = nn.ConvTranspose2d(3, 4, 4, stride=2, padding=1)
    mine = U.ConvTranspose2dScatter(3, 4, 4, stride=2, padding=1)
    mine.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 5, 7)
    torch.testing.assert_close(mine(x), ref(x))


def test_conv_transpose_bad_input_names_the_argument():
    x, w = torch.randn(1, 2, 3, 3), torch.randn(2, 1, 3, 3)
    with pytest.raises(ValueError, match=r"x must be a 4-D Tensor\[B, Cin, H, W\], got shape \(2, 3, 3\)"):
        U.conv_transpose2d_scatter(x[0], w)
    with pytest.raises(ValueError, match=r"stride must be >= 1, got 0"):
        U.conv_transpose2d_scatter(x, w, stride=0)
    with pytest.raises(ValueError, match="output_padding must be smaller than stride or dilation"):
        U.conv_transpose2d_scatter(x, w, stride=2, output_padding=2)
    with pytest.raises(ValueError, match=r"weight must have Cin = 2 rows"):
        U.conv_transpose2d_scatter(x, torch.randn(3, 1, 3, 3))
    with pytest.raises(ValueError, match="stride must be an int"):
        U.conv_transpose1d_scatter(x[:, :, 0], w[:, :, 0], stride=(2, 2))


# ============================================================================= the matrix view
@pytest.mark.parametrize("size,k,stride,padding", [((5, 7), 3, 2, 1), ((6, 6), 4, 2, 1), ((4, 5), 2, 1, 0),
                                                   ((7, 7), 3, 3, 2)])
def test_conv_matrix_is_conv_and_its_transpose_is_conv_transpose(size, k, stride, padding):
    g = torch.Generator().manual_seed(3)
    weight = torch.randn(3, 2, k, k, generator=g, dtype=torch.float64)
    x = torch.randn(2, *size, generator=g, dtype=torch.float64)
    M = U.conv_matrix(size, weight, stride, padding)
    y = F.conv2d(x[None], weight, stride=stride, padding=padding)[0]
    torch.testing.assert_close((M @ x.flatten()).view_as(y), y)
    z = torch.randn(y.shape, generator=g, dtype=torch.float64)
    op = tuple((n + 2 * padding - k) % stride for n in size)
    reference = F.conv_transpose2d(z[None], weight, stride=stride, padding=padding, output_padding=op)[0]
    torch.testing.assert_close((M.T @ z.flatten()).view_as(x), reference)
    # ... which is the gradient of the convolution with respect to its input
    xs = x[None].clone().requires_grad_()
    F.conv2d(xs, weight, stride=stride, padding=padding).backward(z[None])
    torch.testing.assert_close(xs.grad[0], (M.T @ z.flatten()).view_as(x))


def test_conv_matrix_1d():
    weight = torch.tensor([[[1.0, 2.0, 3.0]]])
    M = U.conv_matrix(5, weight, stride=2)
    assert M.tolist() == [[1, 2, 3, 0, 0], [0, 0, 1, 2, 3]]
    x = torch.randn(1, 1, 5)
    torch.testing.assert_close((M @ x.flatten()).view(1, 1, -1), F.conv1d(x, weight, stride=2))
    with pytest.raises(ValueError, match=r"weight must be a 3-D Tensor\[Cout, Cin, k\]"):
        U.conv_matrix(5, weight[None])


# ============================================================================= checkerboard artifacts
def test_overlap_count_is_conv_transpose_of_ones():
    assert U.overlap_count(3, 2, 4).tolist() == [1, 1, 2, 1, 2, 1, 2, 1, 1]
    assert U.overlap_count(4, 2, 4).tolist() == [1, 1, 2, 2, 2, 2, 2, 2, 1, 1]
    torch.testing.assert_close(U.overlap_count((3, 5), (2, 3), (4, 6)),
                               F.conv_transpose2d(torch.ones(1, 1, 4, 6), torch.ones(1, 1, 3, 5), stride=(2, 3))[0, 0])


def test_checkerboard_score_is_energy_at_stride_frequencies():
    g = torch.Generator().manual_seed(0)
    for s in (2, 3):
        y = torch.randn(3, 12, 12, generator=g) + torch.randn(s, s, generator=g).repeat(12 // s, 12 // s)
        spectrum = torch.fft.fft2(y.double()).abs().pow(2)
        at_stride = spectrum[:, ::12 // s, ::12 // s].sum() - spectrum[:, 0, 0].sum()
        assert abs(U.checkerboard_score(y, s) - float(at_stride / spectrum.sum())) < 1e-9


def test_checkerboard_score_zero_when_even_positive_when_uneven():
    for k, s in ((4, 2), (2, 2), (6, 3), (1, 1)):
        assert U.checkerboard_score(U.overlap_count((k, k), s, (10, 10)), s, border=k) < 1e-12
    assert U.checkerboard_score(U.overlap_count((3, 3), 2, (10, 10)), 2, border=3) == pytest.approx(0.19)
    assert U.checkerboard_score(U.overlap_count(3, 2, 10), 2, border=3) == pytest.approx(0.1)
    assert U.checkerboard_score(U.overlap_count((5, 5), 3, (10, 10)), 3, border=5) > 0.01
    # resize (nearest) then a stride-1 convolution: no period-2 pattern from a constant input
    layer = U.ResizeConv(4, 3, 2, "nearest")
    assert U.checkerboard_score(layer(torch.ones(1, 4, 8, 8)), 2, border=2) < 1e-10
    assert U.checkerboard_score(torch.full((5, 5), 3.0), 2) == 0.0


def test_checkerboard_score_bad_input():
    with pytest.raises(ValueError, match="stride must be >= 1, got 0"):
        U.checkerboard_score(torch.ones(4, 4), 0)
    with pytest.raises(ValueError, match="keeps fewer than stride=2 pixels"):
        U.checkerboard_score(torch.ones(4, 4), 2, border=2)


def test_icnr_subpixel_equals_nearest_upsampling_of_a_conv():
    torch.manual_seed(0)
    layer = U.SubPixelConv(3, 2, scale=2, kernel_size=3, icnr=True)
    x = torch.randn(1, 3, 6, 5)
    sub = layer.conv.weight[::4]                          # the one kernel of each output channel
    plain = F.conv2d(x, sub, layer.conv.bias[::4], padding=1)
    torch.testing.assert_close(layer(x), U.nearest_unpool(plain, 2))
    assert U.checkerboard_score(layer(torch.ones(1, 3, 8, 8)), 2, border=2) < 1e-10
    default = U.SubPixelConv(3, 2, scale=2, icnr=False)
    assert U.checkerboard_score(default(torch.ones(1, 3, 8, 8)), 2, border=2) > 0.01
    with pytest.raises(ValueError, match="multiple of scale\\^2 = 4 output channels, got 6"):
        U.icnr_(torch.empty(6, 3, 3, 3), 2)


def test_resize_conv_shapes_and_mode():
    x = torch.randn(2, 3, 5, 7)
    for mode in ("nearest", "bilinear"):
        assert U.ResizeConv(3, 4, 2, mode)(x).shape == (2, 4, 10, 14)
    with pytest.raises(ValueError, match="mode must be 'nearest' or 'bilinear', got 'cubic'"):
        U.ResizeConv(3, 4, 2, "cubic")


# ============================================================================= the exercise
def test_check_conv_transpose1d(capsys):
    assert exercises.check_conv_transpose1d(lambda x, w, s, p, op: U.conv_transpose1d_scatter(x, w, None, s, p, op))
    assert "all 6 cases pass" in capsys.readouterr().out

    def overwrites(x, w, s, p, op):  # assigns each copy instead of adding it
        B, _, L = x.shape
        k = w.shape[-1]
        y = torch.zeros(B, w.shape[1], (L - 1) * s + k + op)
        for i in range(L):
            y[:, :, i * s:i * s + k] = torch.einsum("bc,cok->bok", x[:, :, i], w)
        return y[:, :, p:p + (L - 1) * s - 2 * p + k + op]

    assert not exercises.check_conv_transpose1d(overwrites)
    assert "output[0, 0, 2] should be 102.0000, got 2.0000" in capsys.readouterr().out


@pytest.mark.parametrize("scale", [2, 4, 8, 16])
def test_bilinear_transposed_conv_equals_bilinear_interpolation_inside(scale):
    """FCN's initialization: the transposed convolution equals F.interpolate(bilinear,
    align_corners=False) away from a border of `scale` pixels, channel by channel."""
    x = torch.rand(2, 3, 7, 9, generator=torch.Generator().manual_seed(scale))
    layer = U.bilinear_upsampler(3, scale)
    ours = layer(x)
    theirs = torch.nn.functional.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
    assert ours.shape == theirs.shape == (2, 3, 7 * scale, 9 * scale)
    torch.testing.assert_close(ours[..., scale:-scale, scale:-scale], theirs[..., scale:-scale, scale:-scale])
    assert layer.weight.requires_grad and not U.bilinear_upsampler(3, scale, learnable=False).weight.requires_grad
    with pytest.raises(ValueError, match="scale must be even"):
        U.bilinear_upsampler(3, 3)
    depthwise = U.bilinear_upsampler(3, scale, depthwise=True)
    assert depthwise.weight.shape == (3, 1, 2 * scale, 2 * scale) and depthwise.groups == 3
    torch.testing.assert_close(depthwise(x), ours)


def test_stride_pattern_verdict_on_planted_patterns():
    """One rule: "strong" at amplitude >= PATTERN_RATIO x variation. A pure period-2 pattern is
    all pattern; texture at random positions averages out over the probes; a faint pattern
    under texture is found when it is above the ratio and not below it."""
    g = torch.Generator().manual_seed(0)
    checker = torch.tensor([[1.0, -1.0], [-1.0, 1.0]]).repeat(8, 8)
    pure = U.stride_pattern(checker[None, None], 2)
    assert pure["verdict"] == "strong" and abs(pure["ratio"] - 1) < 1e-9
    texture = torch.randn(200, 3, 16, 16, generator=g)
    assert U.stride_pattern(texture, 2)["verdict"] == "little"
    assert U.stride_pattern(texture + 0.3 * checker, 2)["verdict"] == "strong"
    assert U.stride_pattern(texture + 0.02 * checker, 2)["verdict"] == "little"
    assert U.stride_pattern(torch.ones(1, 1, 8, 8), 2)["verdict"] == "little"
    with pytest.raises(ValueError, match="N probes"):
        U.stride_pattern(checker, 2)
