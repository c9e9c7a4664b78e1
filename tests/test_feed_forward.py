"""The DiT's FeedForward, numerically: each activation against its formula, and the autograd path (training)
against the in-place inference path. The golden files cover only SwiGLU at inference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from samaudio.model.config import TransformerConfig
from samaudio.model.transformer import FeedForward

FORMULAS = {  # the activations by their textbook definitions, not through the module's table
    "relu": lambda x: torch.clamp(x, min=0),
    "gelu": lambda x: 0.5 * x * (1 + torch.erf(x / 2**0.5)),
    "approx_gelu": lambda x: 0.5 * x * (1 + torch.tanh((2 / torch.pi) ** 0.5 * (x + 0.044715 * x**3))),
    "srelu": lambda x: torch.clamp(x, min=0) ** 2,
    "silu": lambda x: x * torch.sigmoid(x),
}
TOL = 1e-5


def feed_forward(non_linearity: str) -> FeedForward:
    torch.manual_seed(0)
    # awkward sizes: a width of 12, a hidden size rounded up to a multiple of 5, biases
    config = TransformerConfig(dim=12, ffn_exp=3, multiple_of=5, non_linearity=non_linearity, fc_bias=True)
    return FeedForward(config).eval()


@pytest.mark.parametrize("name", sorted(FORMULAS))
def test_each_activation_is_its_formula_with_and_without_autograd(name):
    ff = feed_forward(name)
    x = torch.randn(2, 7, 12)  # (B, T, D)
    expected = F.linear(FORMULAS[name](F.linear(x, ff.w1.weight, ff.w1.bias)), ff.w2.weight, ff.w2.bias)
    with torch.no_grad():
        inference = ff(x)
    training = ff(x.clone().requires_grad_(True))
    assert torch.allclose(inference, expected, rtol=0, atol=TOL)
    assert torch.allclose(training, expected, rtol=0, atol=TOL)


def test_swiglu_with_autograd_equals_the_in_place_inference_path():
    ff = feed_forward("swiglu")
    x = torch.randn(2, 7, 12)
    w1 = F.linear(x, ff.w1.weight, ff.w1.bias)
    w3 = F.linear(x, ff.w3.weight, ff.w3.bias)
    expected = F.linear(FORMULAS["silu"](w1) * w3, ff.w2.weight, ff.w2.bias)
    with torch.no_grad():
        inference = ff(x)
    x_grad = x.clone().requires_grad_(True)
    training = ff(x_grad)
    training.sum().backward()  # the autograd path keeps what backward needs
    assert torch.allclose(inference, expected, rtol=0, atol=TOL)
    assert torch.allclose(training, expected, rtol=0, atol=TOL)
    assert x_grad.grad is not None and bool(torch.isfinite(x_grad.grad).all())
