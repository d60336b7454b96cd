"""The exercise checkers accept right answers and point at the first wrong case."""
import torch
import torchvision

from lessons_pkg import exercises


def test_check_masks_to_boxes(capsys):
    def right(masks):
        if masks.shape[0] == 0:
            return torch.zeros(0, 4)
        return torchvision.ops.masks_to_boxes(masks) + torch.tensor([0.0, 0, 1, 1])

    assert exercises.check_masks_to_boxes(right)
    assert "all 5 cases pass" in capsys.readouterr().out
    assert not exercises.check_masks_to_boxes(torchvision.ops.masks_to_boxes)
    assert "single pixel" in capsys.readouterr().out
    assert not exercises.check_masks_to_boxes(lambda m: 1 / 0)
    assert "raised ZeroDivisionError" in capsys.readouterr().out


def test_check_linear_to_conv(capsys):
    from torch import nn

    from lessons_pkg.models import sliding_window

    state = torch.random.get_rng_state()
    assert exercises.check_linear_to_conv(sliding_window.linear_to_conv)
    assert "all 5 cases pass" in capsys.readouterr().out
    assert torch.equal(torch.random.get_rng_state(), state)  # the checker leaves the reader's RNG alone

    def scrambled(linear, d, k):  # (out, k, k, D) order: a classic mistake
        conv = nn.Conv2d(d, linear.out_features, k, bias=linear.bias is not None)
        with torch.no_grad():
            conv.weight.copy_(linear.weight.view(-1, k, k, d).permute(0, 3, 1, 2))
            if linear.bias is not None:
                conv.bias.copy_(linear.bias)
        return conv

    assert not exercises.check_linear_to_conv(scrambled)
    assert "values differ" in capsys.readouterr().out

    def no_bias(linear, d, k):
        conv = sliding_window.linear_to_conv(linear, d, k)
        if conv.bias is not None:
            nn.init.zeros_(conv.bias)
        return conv

    assert not exercises.check_linear_to_conv(no_bias)
    assert "bias" in capsys.readouterr().out
    assert not exercises.check_linear_to_conv(lambda linear, d, k: nn.Conv2d(d, 1, k))
    assert "expected an output of shape" in capsys.readouterr().out


def test_check_miou(capsys):
    def right(pred, target, k):
        ious = []
        for c in range(k):
            inter = ((pred == c) & (target == c)).sum()
            union = ((pred == c) | (target == c)).sum()
            if union > 0:
                ious.append(inter / union)
        return torch.stack(ious).float().mean()

    assert exercises.check_miou(right)
    assert "all 6 cases pass" in capsys.readouterr().out

    def absent_as_zero(pred, target, k):
        ious = [((pred == c) & (target == c)).sum() / ((pred == c) | (target == c)).sum().clamp(min=1) for c in range(k)]
        return torch.stack(ious).float().mean()

    assert not exercises.check_miou(absent_as_zero)
    assert "left out of the mean" in capsys.readouterr().out
    assert not exercises.check_miou(lambda p, t, k: (p == t).float().mean())  # pixel accuracy is not mIoU
    assert "everything called background" in capsys.readouterr().out


def test_check_encode_boxes(capsys):
    from lessons_pkg import boxes

    assert exercises.check_encode_boxes(lambda g, p: boxes.encode_boxes(g, p))
    assert "all 5 cases pass" in capsys.readouterr().out

    def corners_not_centres(g, p):  # dx from the left edges instead of the centres
        pw, ph = p[:, 2] - p[:, 0], p[:, 3] - p[:, 1]
        gw, gh = g[:, 2] - g[:, 0], g[:, 3] - g[:, 1]
        return torch.stack([10 * (g[:, 0] - p[:, 0]) / pw, 10 * (g[:, 1] - p[:, 1]) / ph,
                            5 * torch.log(gw / pw), 5 * torch.log(gh / ph)], dim=1)

    assert not exercises.check_encode_boxes(corners_not_centres)
    assert "twice as tall" in capsys.readouterr().out


def upsample2(x, clamp=True):
    """Bilinear upsampling by 2 written out, with (or without) the border clamp."""
    def coords(n):
        src = (torch.arange(2 * n, dtype=torch.float32) + 0.5) / 2 - 0.5
        if clamp:
            src = src.clamp(min=0)
        lo = src.floor().long()
        return lo, (lo + 1).clamp(max=n - 1), src - lo
    (y0, y1, wy), (x0, x1, wx) = coords(x.shape[-2]), coords(x.shape[-1])
    rows = x[..., y0, :] * (1 - wy)[:, None] + x[..., y1, :] * wy[:, None]
    return rows[..., x0] * (1 - wx) + rows[..., x1] * wx


def test_check_bilinear_upsample(capsys):
    assert exercises.check_bilinear_upsample(upsample2)
    assert "all 5 cases pass" in capsys.readouterr().out
    assert not exercises.check_bilinear_upsample(lambda x: upsample2(x, clamp=False))  # index -1 wraps around
    assert "first wrong output pixel [0, 0, 0, 0]" in capsys.readouterr().out
    assert not exercises.check_bilinear_upsample(lambda x: x.repeat_interleave(2, -1).repeat_interleave(2, -2))
    assert "3 x 4 ramp" in capsys.readouterr().out
