"""PE-A-Frame and separate(predict_spans=True) reproduce the official outputs (golden `span_predictor/`,
`spans.safetensors`, `e2e_spans.safetensors` (sam-audio 68b48d4) and `e2e_spans_pr100.safetensors` (pull request #100))."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

ATOL = RTOL = 1e-4  # features, embeddings, logits, latents (golden README)
WAV_ATOL = 1e-5  # waveforms
PREDICTOR_OUTPUTS = (
    "text_hidden",
    "text_pooled",
    "audio_hidden",
    "audio_pooled",
    "audio_embeds",
    "text_embeds",
    "logits",
    "probs",
)
E2E = {"e2e_spans": "released", "e2e_spans_pr100": "fixed"}  # golden file -> span_anchors mode


def assert_close(actual, expected, atol=ATOL, rtol=RTOL):
    torch.testing.assert_close(actual.float(), expected.float(), atol=atol, rtol=rtol)


@pytest.fixture(scope="module")
def spans_model(golden_dir):
    """The golden SAM-Audio model with the span predictor `config_spans.json` names (config.json + that key)."""
    from samaudio import SAMAudio

    base = json.loads((golden_dir / "config.json").read_text())
    spans = json.loads((golden_dir / "config_spans.json").read_text())
    overrides = {k: v for k, v in spans.items() if base.get(k) != v and k != "span_predictor"}
    return SAMAudio.from_pretrained(golden_dir, span_predictor=spans["span_predictor"], **overrides)


@pytest.fixture(scope="module")
def predictor(spans_model):
    return spans_model.span_predictor


def batch_of(processor, tensors, meta):
    n = len(meta["descriptions"])
    return processor(descriptions=meta["descriptions"], audios=[tensors[f"audio_in_{i}"] for i in range(n)])


# ---------------------------------------------------------------------------------------------------------------
# the predictor on its own


def test_span_predictor_state_dict_matches_official_keys(predictor, golden_dir):
    expected = []
    for line in (golden_dir / "span_predictor" / "keys.txt").read_text().splitlines():
        if line.strip():
            name, shape, dtype = line.split("\t")
            expected.append((name, json.loads(shape), dtype))
    actual = [(n, list(t.shape), str(t.dtype).removeprefix("torch.")) for n, t in predictor.state_dict().items()]
    assert actual == expected


def test_span_predictor_tokenizer_matches_input_ids(spans_model, golden):
    tensors, meta = golden("spans")
    text = spans_model.span_predictor_transform(meta["descriptions"])
    assert torch.equal(text["input_ids"], tensors["input_ids"])
    assert torch.equal(text["attention_mask"], tensors["attention_mask"])


@pytest.fixture(scope="module")
def predictor_out(predictor, golden):
    tensors, _ = golden("spans")
    with torch.inference_mode():
        return predictor(
            input_ids=tensors["input_ids"],
            attention_mask=tensors["attention_mask"],
            input_features=tensors["input_features"],
            padding_mask=tensors["padding_mask"],
        )


@pytest.mark.parametrize("name", PREDICTOR_OUTPUTS)
def test_span_predictor_outputs_match(predictor_out, golden, name):
    tensors, _ = golden("spans")
    assert_close(getattr(predictor_out, name), tensors[name])


def test_span_predictor_active_frames_match_preds_padded_frames_included(predictor_out, golden):
    tensors, meta = golden("spans")
    assert torch.equal(predictor_out.probs > meta["threshold"], tensors["preds"])


# ---------------------------------------------------------------------------------------------------------------
# SAMAudio.predict_spans: the predictor's input, spans and anchors


@pytest.fixture(scope="module")
def prediction(spans_model, golden_processor, golden):
    """predict_spans on the processor's batch, with what the predictor was called with."""
    tensors, meta = golden("spans")
    batch = batch_of(golden_processor, tensors, meta)
    seen = {}

    def record(module, args, kwargs):
        seen.update({k: v.clone() for k, v in kwargs.items()})

    handle = spans_model.span_predictor.register_forward_pre_hook(record, with_kwargs=True)
    try:
        found = spans_model.predict_spans(batch, threshold=meta["threshold"])
    finally:
        handle.remove()
    return batch, found, seen


@pytest.mark.parametrize("name", ["input_ids", "attention_mask", "padding_mask", "input_features"])
def test_predict_spans_feeds_the_predictor_as_the_official_model(prediction, golden, name):
    tensors, _ = golden("spans")
    _, _, seen = prediction
    if tensors[name].dtype.is_floating_point:
        # the predictor's codebook_dim columns of [z, z], not C columns (golden README)
        assert seen[name].shape == tensors[name].shape
        assert_close(seen[name], tensors[name])
    else:
        assert torch.equal(seen[name].to(tensors[name].dtype), tensors[name])


def test_predict_spans_finds_the_official_spans_in_float32_seconds(prediction, golden):
    _, meta = golden("spans")
    _, found, _ = prediction
    assert found.spans == meta["spans"]
    assert [[list(a) for a in item] for item in found.anchors] == meta["anchors"]


def test_predict_spans_anchor_tensors_match_process_anchors(prediction, golden):
    tensors, _ = golden("spans")
    batch, found, _ = prediction
    assert torch.equal(found.anchor_ids, tensors["anchor_ids"])
    assert torch.equal(found.anchor_alignment, tensors["anchor_alignment"])
    assert torch.equal(batch.audio_pad_mask, tensors["audio_pad_mask"])
    assert torch.equal(batch.sizes, tensors["sizes"]) and torch.equal(batch.wav_sizes, tensors["wav_sizes"])


def test_predict_spans_leaves_the_batch_untouched(prediction):
    batch, found, _ = prediction
    assert batch.anchors is None
    assert batch.anchor_ids.shape[1] == 2  # still <null>, <pad> only
    assert not torch.equal(batch.anchor_alignment, found.anchor_alignment)


def test_spans_go_through_float32_seconds_so_boundaries_move_a_frame_later():
    from samaudio.model.span_predictor import spans_from_activity

    active = torch.zeros(1, 12, dtype=torch.bool)
    active[0, 5:7] = True  # frame 5 -> 0.2 s in float32 (0.2000000030) -> ceil(5.0000000745) = frame 6
    ((start, end),) = spans_from_activity(active, 1920, 48000)[0]
    assert start == float(torch.tensor(0.2, dtype=torch.float32))
    assert end == float(torch.tensor(0.28, dtype=torch.float32))


# ---------------------------------------------------------------------------------------------------------------
# separate(predict_spans=True), released (68b48d4) and fixed (PR #100)


class SpanRun:
    """One separate(predict_spans=True) run, with the anchors each solver evaluation saw and the decoder input."""

    def __init__(self, model, processor, golden, case, mode):
        self.tensors, meta = golden(case)
        batch = batch_of(processor, self.tensors, meta)
        self.anchor_ids, self.anchor_alignment, self.decoded, self.span_out = [], [], [], []
        forward, decode = model.forward, model.audio_codec.decode

        def recording_forward(**kwargs):
            self.anchor_ids.append(kwargs["anchor_ids"].clone())
            self.anchor_alignment.append(kwargs["anchor_alignment"].clone())
            return forward(**kwargs)

        def recording_decode(latent, message=None):
            self.decoded.append(latent.clone())
            return decode(latent, message=message)

        self.span_in = {}
        handle = model.span_predictor.register_forward_hook(lambda m, a, out: self.span_out.append(out))
        handle_in = model.span_predictor.register_forward_pre_hook(
            lambda m, a, kw: self.span_in.update(kw), with_kwargs=True
        )
        model.forward, model.audio_codec.decode = recording_forward, recording_decode
        try:
            self.result = model.separate(
                batch,
                noise=self.tensors["noise"],
                ode_opt=meta["ode_opt"],
                watermark_message=self.tensors["wm_message"],
                predict_spans=True,
                span_anchors=mode,
            )
        finally:
            del model.forward, model.audio_codec.decode
            handle.remove()
            handle_in.remove()
        self.meta, self.batch = meta, batch


@pytest.fixture(scope="module")
def span_runs(spans_model, golden_processor, golden):
    return {case: SpanRun(spans_model, golden_processor, golden, case, mode) for case, mode in E2E.items()}


@pytest.mark.parametrize("case", list(E2E))
def test_separate_with_predicted_spans_conditions_the_dit_on_fwd_anchors(span_runs, case):
    run = span_runs[case]
    for ids, alignment in zip(run.anchor_ids, run.anchor_alignment):
        assert torch.equal(ids, run.tensors["fwd_anchor_ids"])
        assert torch.equal(alignment, run.tensors["fwd_anchor_alignment"])


@pytest.mark.parametrize("case", list(E2E))
def test_separate_with_predicted_spans_returns_the_spans_the_batch_got(span_runs, case):
    run = span_runs[case]
    assert run.result.spans == run.meta["spans"]
    (out,) = run.span_out
    assert_close(out.audio_embeds, run.tensors["span_audio_embeds"])
    assert_close(out.text_embeds, run.tensors["span_text_embeds"])
    assert torch.equal(run.span_in["input_ids"], run.tensors["span_input_ids"])
    assert torch.equal(run.span_in["attention_mask"].to(torch.int64), run.tensors["span_attention_mask"])
    scratch = run.batch
    scratch.process_anchors([[tuple(a) for a in item] for item in run.meta["anchors_predicted"]])
    assert torch.equal(scratch.anchor_ids, run.tensors["batch_anchor_ids"])
    assert torch.equal(scratch.anchor_alignment, run.tensors["batch_anchor_alignment"])


@pytest.mark.parametrize("case", list(E2E))
def test_separate_with_predicted_spans_builds_the_official_forward_args(spans_model, golden_processor, golden, case):
    tensors, meta = golden(case)
    batch = batch_of(golden_processor, tensors, meta)
    with torch.inference_mode():
        args = spans_model._get_forward_args(batch)
    for name, value in args.items():
        # anchors: as built before predict_spans (built_*); the rest as the ODE used them (fwd_*)
        expected = tensors.get(f"built_{name}", tensors[f"fwd_{name}"])
        if expected.dtype.is_floating_point:
            assert_close(value, expected)
        else:
            assert torch.equal(value, expected), name
    for name in ("sizes", "wav_sizes", "audio_pad_mask"):
        assert torch.equal(getattr(batch, name), tensors[f"batch_{name}"]), name


@pytest.mark.parametrize("case", list(E2E))
def test_separate_with_predicted_spans_matches_ode_final(span_runs, case):
    run = span_runs[case]
    (decoded,) = run.decoded
    assert_close(decoded, run.tensors["decode_in"])
    B, T, _ = run.tensors["ode_final"].shape
    assert_close(decoded.reshape(B, -1, T).transpose(1, 2), run.tensors["ode_final"])


@pytest.mark.parametrize("case", list(E2E))
def test_separate_with_predicted_spans_matches_waveforms(span_runs, case):
    run = span_runs[case]
    for i in range(len(run.result.target)):
        assert run.result.target[i].shape == run.tensors[f"target_{i}"].shape
        assert_close(run.result.target[i], run.tensors[f"target_{i}"], atol=WAV_ATOL, rtol=0)
        assert_close(run.result.residual[i], run.tensors[f"residual_{i}"], atol=WAV_ATOL, rtol=0)


def test_default_span_anchors_is_the_fixed_behaviour(spans_model, golden_processor, golden):
    tensors, meta = golden("e2e_spans_pr100")
    batch = batch_of(golden_processor, tensors, meta)
    one_step = {"method": "euler", "options": {"step_size": 1.0}}
    common = dict(noise=tensors["noise"], ode_opt=one_step, watermark_message=tensors["wm_message"])
    default = spans_model.separate(batch, predict_spans=True, **common)
    fixed = spans_model.separate(batch, predict_spans=True, span_anchors="fixed", **common)
    released = spans_model.separate(batch, predict_spans=True, span_anchors="released", **common)
    plain = spans_model.separate(batch, **common)
    assert torch.equal(default.target[0], fixed.target[0])
    assert torch.equal(released.target[0], plain.target[0])  # 68b48d4: the predicted anchors never reach the DiT
    assert not torch.equal(fixed.target[0], plain.target[0])
    assert plain.spans is None


def test_user_anchors_win_over_predicted_spans(spans_model, golden_processor, golden):
    tensors, meta = golden("e2e_spans_pr100")
    n = len(meta["descriptions"])
    anchors = [[("+", 0.0, 0.5)] for _ in range(n)]
    batch = golden_processor(
        descriptions=meta["descriptions"], audios=[tensors[f"audio_in_{i}"] for i in range(n)], anchors=anchors
    )
    one_step = {"method": "euler", "options": {"step_size": 1.0}}
    common = dict(noise=tensors["noise"], ode_opt=one_step, watermark_message=tensors["wm_message"])
    with_spans = spans_model.separate(batch, predict_spans=True, **common)
    without = spans_model.separate(batch, **common)
    assert with_spans.spans is None
    assert torch.equal(with_spans.target[0], without.target[0])


def test_span_anchors_must_be_a_known_mode(spans_model, golden_processor, golden):
    from samaudio.errors import InvalidRequestError

    tensors, meta = golden("e2e_spans_pr100")
    with pytest.raises(InvalidRequestError, match="released"):
        spans_model.separate(batch_of(golden_processor, tensors, meta), predict_spans=True, span_anchors="pinned")


# ---------------------------------------------------------------------------------------------------------------
# loading on request only


def test_plain_loading_builds_no_span_predictor(golden_model):
    assert golden_model.span_predictor is None
    assert not any("ModernBert" in type(m).__name__ for m in golden_model.modules())


def test_predict_spans_without_the_predictor_says_how_to_load_it(golden_model, golden_processor, golden):
    from samaudio.errors import InvalidRequestError

    tensors, meta = golden("e2e_spans")
    with pytest.raises(InvalidRequestError, match="span_predictor="):
        golden_model.separate(batch_of(golden_processor, tensors, meta), predict_spans=True)


def test_span_predictor_hub_name_offline_is_model_unavailable(golden_dir, monkeypatch):
    from samaudio import SAMAudio
    from samaudio.errors import ModelUnavailableError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailableError, match="facebook/pe-a-frame-large"):
        SAMAudio.from_pretrained(golden_dir, span_predictor="pe-a-frame-large")


def test_span_predictor_true_with_a_null_config_key_is_a_config_error(golden_dir):
    from samaudio import SAMAudio
    from samaudio.errors import ConfigError

    if json.loads((golden_dir / "config.json").read_text()).get("span_predictor") is not None:
        pytest.skip("this case's config.json names a span predictor")
    with pytest.raises(ConfigError, match="span_predictor null"):
        SAMAudio.from_pretrained(golden_dir, span_predictor=True)


def test_span_predictor_config_that_does_not_fit_its_weights_names_the_keys(golden_dir, tmp_path):
    from samaudio.errors import CheckpointError
    from samaudio.model.span_predictor import PEAudioFrame

    folder = tmp_path / "span_predictor"
    shutil.copytree(golden_dir / "span_predictor", folder)
    config = json.loads((folder / "config.json").read_text())
    config["output_dim"] += 3
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"shape mismatch\(es\), first text_head\.proj\.weight"):
        PEAudioFrame.from_pretrained(folder)


def test_frame_activity_on_an_item_without_padding_gives_its_preds_and_takes_any_window(
    spans_model, golden_processor, golden
):
    """What a streaming window asks for: activity of any stretch of features, no batch or mask needed."""
    tensors, meta = golden("spans")
    batch = batch_of(golden_processor, tensors, meta)
    full = int(batch.sizes.argmax())  # the longest item has no padded frame
    with torch.inference_mode():
        features = spans_model._get_forward_args(batch)["audio_features"][full : full + 1]
        _, active = spans_model.frame_activity(meta["descriptions"][full : full + 1], features, threshold=meta["threshold"])
        _, window = spans_model.frame_activity(meta["descriptions"][full : full + 1], features[:, :7])
    assert torch.equal(active[0], tensors["preds"][full])
    assert window.shape == (1, 7) and window.dtype == torch.bool
