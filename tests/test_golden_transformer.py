"""The DiT against the official model's golden tensors, and the behaviours transformer.md specifies."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
import torch

from samaudio.errors import InvalidRequestError
from samaudio.model.config import TransformerConfig
from samaudio.model.rope import RotaryEmbedding, rope_theta
from samaudio.model.transformer import DiT, _ffn_hidden

PREFIX = "transformer."
ATOL = RTOL = 1e-4


@pytest.fixture(scope="module")
def golden_config(golden_dir) -> TransformerConfig:
    fields = json.loads((golden_dir / "config.json").read_text())["transformer"]
    return TransformerConfig(**fields)


@pytest.fixture(scope="module")
def golden_dit(golden_dir, golden_config) -> DiT:
    from safetensors import safe_open

    with safe_open(str(golden_dir / "model.safetensors"), framework="pt") as f:
        state = {k[len(PREFIX) :]: f.get_tensor(k) for k in f.keys() if k.startswith(PREFIX)}
    torch.manual_seed(1)  # weights come from the file; the seed only fixes the init they overwrite
    model = DiT(golden_config)
    model.load_state_dict(state, strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def dit_inputs(golden):
    tensors, _ = golden("forward")
    return {
        "x": tensors["dit_x"],
        "time": tensors["dit_time"],
        "padding_mask": tensors["dit_padding_mask"],
        "memory": tensors["dit_memory"],
        "memory_padding_mask": tensors["dit_memory_padding_mask"],
    }


def run(model: DiT, inputs: dict) -> torch.Tensor:
    inputs = dict(inputs)
    with torch.no_grad():
        return model(inputs.pop("x"), inputs.pop("time"), **inputs)


def test_golden_dit_state_dict_keys_shapes_and_order_equal_the_reference(golden_config, golden_keys):
    expected = [(name[len(PREFIX) :], shape) for name, shape, _ in golden_keys if name.startswith(PREFIX)]
    actual = [(name, list(t.shape)) for name, t in DiT(golden_config).state_dict().items()]
    assert actual == expected


def test_golden_dit_reference_weights_are_float32_and_load_strictly(golden_dit, golden_keys):
    dtypes = {name[len(PREFIX) :]: dtype for name, _, dtype in golden_keys if name.startswith(PREFIX)}
    assert set(dtypes.values()) == {"float32"}
    assert set(golden_dit.state_dict()) == set(dtypes)


def test_golden_dit_output_matches_the_reference(golden_dit, dit_inputs, golden, record_property):
    expected = golden("forward")[0]["dit_out"]
    out = run(golden_dit, dit_inputs)
    max_diff = (out - expected).abs().max().item()
    record_property("dit_out_max_abs_diff", max_diff)
    assert out.shape == expected.shape
    torch.testing.assert_close(out, expected, atol=ATOL, rtol=RTOL, msg=lambda m: f"max|diff| {max_diff:.3g}\n{m}")


def test_golden_dit_is_deterministic_in_eval_mode(golden_dit, dit_inputs):
    assert torch.equal(run(golden_dit, dit_inputs), run(golden_dit, dit_inputs))


def test_golden_dit_dropout_is_live_in_training_mode(golden_dit, dit_inputs):
    golden_dit.train()
    try:
        torch.manual_seed(0)
        a = run(golden_dit, dit_inputs)
        b = run(golden_dit, dit_inputs)
    finally:
        golden_dit.eval()
    assert not torch.allclose(a, b)


def test_golden_dit_masked_memory_tokens_do_not_change_the_output(golden_dit, dit_inputs):
    """Appending memory tokens that the key mask marks invalid leaves every output frame as it was."""
    B, S, Dc = dit_inputs["memory"].shape
    mask = dit_inputs["memory_padding_mask"]
    extra = 5
    padded = dict(dit_inputs)
    padded["memory"] = torch.cat([dit_inputs["memory"], 100 * torch.randn(B, extra, Dc)], dim=1)
    padded["memory_padding_mask"] = torch.cat([mask, torch.zeros(B, extra, dtype=torch.bool)], dim=1)
    torch.testing.assert_close(run(golden_dit, padded), run(golden_dit, dit_inputs), atol=1e-5, rtol=1e-5)


def test_golden_dit_batch_rows_are_computed_independently(golden_dit, dit_inputs):
    full = run(golden_dit, dit_inputs)
    for b in range(full.shape[0]):
        alone = run(golden_dit, {k: v[b : b + 1] for k, v in dit_inputs.items()})
        torch.testing.assert_close(alone[0], full[b], atol=1e-5, rtol=1e-5)


def test_golden_dit_padded_frames_still_shape_valid_frames_through_the_groupnorm(golden_dit, dit_inputs):
    """Only attention keys are masked: the x_embedder's one-group GroupNorm still sees padded frames."""
    B, T, D = dit_inputs["x"].shape
    inputs = {k: v[:1] for k, v in dit_inputs.items()}
    valid = T - 3
    inputs["padding_mask"] = torch.arange(T)[None] < valid  # (1, T)
    changed = dict(inputs)
    changed["x"] = inputs["x"].clone()
    changed["x"][:, valid:] += 10.0
    a, b = run(golden_dit, inputs), run(golden_dit, changed)
    assert (a[:, :valid] - b[:, :valid]).abs().max() > 1e-3


def test_golden_dit_rejects_more_frames_than_the_rope_table_with_a_named_error(golden_config):
    model = DiT(dataclasses.replace(golden_config, max_positions=50)).eval()
    x = torch.randn(1, 51, golden_config.dim)
    memory = torch.randn(1, 3, golden_config.context_dim)
    with pytest.raises(InvalidRequestError, match=r"51 latent frames .*50 frames \(2\.00 s at 25 frames per second"):
        model(x, torch.rand(1), memory=memory)


def test_golden_dit_accepts_exactly_max_positions_frames(golden_config):
    model = DiT(dataclasses.replace(golden_config, max_positions=50)).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 50, golden_config.dim), torch.rand(1), memory=torch.randn(1, 3, golden_config.dim))
    assert out.shape == (1, 50, golden_config.out_channels)


def test_golden_dit_runs_in_bfloat16_close_to_float32(golden_dit, dit_inputs):
    model = DiT(golden_dit.config)
    model.load_state_dict(golden_dit.state_dict())
    model = model.eval().to(torch.bfloat16)
    assert model.rope_embeddings.freqs_cis.dtype == torch.float32  # the table is not rounded with the weights
    assert model.t_embedder.freqs.dtype == torch.float32
    inputs = {k: v.to(torch.bfloat16) if v.is_floating_point() and k != "time" else v for k, v in dit_inputs.items()}
    out = run(model, inputs)
    ref = run(golden_dit, dit_inputs)
    assert out.dtype == torch.bfloat16
    err = (out.float() - ref).norm() / ref.norm()
    assert err < 5e-2


def new_and_gone_keys(config: TransformerConfig, **change) -> tuple[set[str], set[str]]:
    base = set(DiT(config).state_dict())
    keys = set(DiT(dataclasses.replace(config, **change)).state_dict())
    return keys - base, base - keys


def test_golden_dit_fc_bias_gives_every_linear_but_t_block_and_data_proj_a_bias(golden_config):
    new, gone = new_and_gone_keys(golden_config, fc_bias=True)
    weights = DiT(golden_config).state_dict()
    linear = re.compile(r"(\.(wq|wk|wv|wo|w1|w2|w3)|^output)\.weight$")
    assert new == {k.replace(".weight", ".bias") for k in weights if linear.search(k)} and not gone


@pytest.mark.parametrize(
    ("change", "added", "removed"),
    [
        ({"qk_norm": False}, set(), {"attention.q_norm.weight", "attention.k_norm.weight"}),
        ({"non_linearity": "gelu"}, set(), {"feed_forward.w3.weight"}),
        ({"timestep_non_linearity": "silu"}, set(), {"t_embedder.projection.w3.weight"}),
        ({"context_non_linearity": "relu"}, set(), {"y_embedder.projection.w3.weight"}),
        ({"t_block_bias": False}, set(), {"t_block.bias"}),
        ({"context_norm": True}, {"y_embedder.norm.weight"}, set()),
        ({"in_channels": 7}, {"data_proj.weight", "data_proj.bias"}, set()),
    ],
)
def test_golden_dit_config_variations_add_and_remove_the_documented_keys(golden_config, change, added, removed):
    """Names without a layer prefix are checked as suffixes: they change in every layer."""
    new, gone = new_and_gone_keys(golden_config, **change)
    strip = lambda keys: {re.sub(r"^layers\.\d+\.(cross_)?", "", k) for k in keys}  # noqa: E731
    assert (strip(new), strip(gone)) == (added, removed)


@pytest.mark.parametrize("change", [{"qk_norm": False}, {"non_linearity": "srelu"}, {"use_rope": False},
                                    {"context_norm": True, "timestep_non_linearity": "approx_gelu"}])
def test_golden_dit_config_variations_run(golden_config, change):
    model = DiT(dataclasses.replace(golden_config, **change)).eval()
    T = 6
    with torch.no_grad():
        out = model(torch.randn(2, T, golden_config.dim), torch.rand(2), memory=torch.randn(2, 3, golden_config.dim))
    assert out.shape == (2, T, golden_config.out_channels) and out.isfinite().all()


def test_golden_dit_key_order_puts_context_norm_and_data_proj_where_the_reference_does(golden_config):
    keys = list(DiT(dataclasses.replace(golden_config, context_norm=True, in_channels=7)).state_dict())
    assert keys[1:3] == ["data_proj.weight", "data_proj.bias"]
    assert keys.index("y_embedder.norm.weight") + 1 == keys.index("y_embedder.projection.w1.weight")


@pytest.mark.parametrize(("dim", "hidden"), [(64, 192), (1024, 2752), (1536, 4096), (2816, 7552)])
def test_golden_dit_feed_forward_hidden_size_follows_the_reference_formula(dim, hidden):
    assert _ffn_hidden(dim, 4, 1, 64, swiglu=True) == hidden


def test_golden_dit_rope_theta_is_twice_max_positions_but_at_least_ten_thousand():
    assert rope_theta(10000) == 20000
    assert rope_theta(100) == 10000
    cos, sin = RotaryEmbedding(16, 10000)(3)
    assert cos.shape == (3, 8) and torch.equal(cos[0], torch.ones(8)) and torch.equal(sin[0], torch.zeros(8))
    torch.testing.assert_close(sin[1, 1], torch.tensor(1 / 20000 ** (2 / 16)).sin())
