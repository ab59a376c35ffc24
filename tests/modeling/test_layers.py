"""WSConv2d: MMCV's formula to 1e-6 against float64, forward and backward; eval-mode cache."""

import pytest
import torch
import torch.nn.functional as F

from wszoo.modeling.layers import WSConv2d, standardize_weight


def mmcv_conv_ws_float64(x, weight, bias, *, stride, padding, groups, eps=1e-5):
    """A float64 transcription of mmcv/cnn/bricks/conv_ws.py conv_ws_2d."""
    w = weight.double()
    flat = w.view(w.size(0), -1)
    mean = flat.mean(dim=1, keepdim=True).view(-1, 1, 1, 1)
    std = flat.std(dim=1, keepdim=True).view(-1, 1, 1, 1)  # unbiased
    w = (w - mean) / (std + eps)
    return F.conv2d(x.double(), w, None if bias is None else bias.double(), stride, padding, 1, groups)


def _rel_err(a, b):
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("groups,bias,stride", [(1, False, 1), (4, False, 2), (1, True, 1)])
def test_forward_and_backward_match_float64_mmcv_formula(groups, bias, stride):
    torch.manual_seed(0)
    conv = WSConv2d(8, 16, 3, stride=stride, padding=1, groups=groups, bias=bias)
    with torch.no_grad():
        conv.weight.mul_(3.0).add_(0.5)  # a non-zero mean and a scale far from 1 stress the formula
    x = torch.randn(2, 8, 9, 11, requires_grad=True)
    out = conv(x)
    ref_w = conv.weight.detach().clone().double().requires_grad_(True)
    ref_x = x.detach().clone().double().requires_grad_(True)
    ref = mmcv_conv_ws_float64(
        ref_x, ref_w, None if conv.bias is None else conv.bias.detach(), stride=stride, padding=1, groups=groups
    )
    assert _rel_err(out, ref) < 1e-6

    grad_out = torch.randn_like(out)
    out.backward(grad_out)
    ref.backward(grad_out.double())
    assert _rel_err(conv.weight.grad, ref_w.grad) < 1e-6
    assert _rel_err(x.grad, ref_x.grad) < 1e-6


def test_formula_is_unbiased_std_with_eps_outside_sqrt():
    weight = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    out = standardize_weight(weight, eps=0.5)
    flat = weight.view(4, -1)
    expected = (flat - flat.mean(1, keepdim=True)) / (flat.var(1, unbiased=True, keepdim=True).sqrt() + 0.5)
    torch.testing.assert_close(out.view(4, -1), expected, rtol=0, atol=1e-12)
    biased = (flat - flat.mean(1, keepdim=True)) / (flat.var(1, unbiased=False, keepdim=True) + 0.5).sqrt()
    assert not torch.allclose(out.view(4, -1), biased)


def _eval_conv():
    torch.manual_seed(1)
    return WSConv2d(4, 6, 3, padding=1, bias=False).eval()


def test_eval_mode_computes_the_standardized_weight_once():
    conv, x = _eval_conv(), torch.randn(1, 4, 5, 5)
    with torch.no_grad():
        first = conv(x)
        cached = conv.standardized_weight()
        second = conv(x)
        assert conv.standardized_weight() is cached
    assert torch.equal(first, second)
    with torch.inference_mode():
        assert torch.equal(conv(x), first)


def test_cache_invalidated_by_load_state_dict():
    conv, x = _eval_conv(), torch.randn(1, 4, 5, 5)
    with torch.no_grad():
        before = conv(x)
        new = {"weight": torch.randn_like(conv.weight)}
        conv.load_state_dict(new)
        after = conv(x)
    assert not torch.allclose(before, after)
    expected = F.conv2d(x, standardize_weight(new["weight"]), None, 1, 1)
    torch.testing.assert_close(after, expected, rtol=0, atol=0)


def test_cache_invalidated_by_in_place_update_and_optimizer_step():
    conv, x = _eval_conv(), torch.randn(1, 4, 5, 5)
    with torch.no_grad():
        conv(x)
        conv.weight[0].mul_(-2.0)
        after = conv(x)
    torch.testing.assert_close(after, F.conv2d(x, standardize_weight(conv.weight.detach()), None, 1, 1))

    optimizer = torch.optim.SGD(conv.parameters(), lr=0.5)
    conv.train()
    conv(x).square().sum().backward()
    optimizer.step()
    conv.eval()
    with torch.no_grad():
        stepped = conv(x)
    torch.testing.assert_close(stepped, F.conv2d(x, standardize_weight(conv.weight.detach()), None, 1, 1))


def test_train_clears_cache_and_gradients_flow_in_eval_with_grad():
    conv, x = _eval_conv(), torch.randn(1, 4, 5, 5)
    with torch.no_grad():
        conv(x)
    assert conv._cached_weight is not None
    conv.train()
    assert conv._cached_weight is None
    conv.eval()
    conv(x).sum().backward()  # eval mode, autograd on: no stale no-grad cache may be used
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0


def test_replacing_the_parameter_or_dtype_invalidates():
    conv, x = _eval_conv(), torch.randn(1, 4, 5, 5)
    with torch.no_grad():
        conv(x)
        conv.weight = torch.nn.Parameter(torch.randn_like(conv.weight))
        out = conv(x)
        torch.testing.assert_close(out, F.conv2d(x, standardize_weight(conv.weight), None, 1, 1))
        conv.double()
        assert conv(x.double()).dtype == torch.float64


def test_frozen_weights_are_standardized_once_in_training_too():
    conv = WSConv2d(4, 6, 3, padding=1, bias=False).train()
    conv.weight.requires_grad_(False)
    x = torch.randn(1, 4, 5, 5, requires_grad=True)
    conv(x).sum().backward()
    cached = conv.standardized_weight()
    assert conv.standardized_weight() is cached
    torch.testing.assert_close(conv(x), F.conv2d(x, standardize_weight(conv.weight), None, 1, 1))
