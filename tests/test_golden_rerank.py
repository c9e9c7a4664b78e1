"""separate(reranking_candidates=K) with the official ensemble text ranker reproduces the official run, and rankers
load only on request (golden case from SAMAUDIO_GOLDEN: `config_rerank.json`, `e2e_rerank.safetensors`)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from samaudio import SAMAudio
from samaudio.errors import CheckpointError, ConfigError, InvalidRequestError
from samaudio.model.model import SAMAudio as _SAMAudio
from samaudio.ranking import EnsembleRanker, Ranker, create_ranker, parse_ranker_config

ATOL = RTOL = 1e-4
WAV_ATOL = 1e-5


def close(actual, expected, atol=ATOL, rtol=RTOL):
    torch.testing.assert_close(actual.float(), expected.float(), atol=atol, rtol=rtol)


@pytest.fixture(scope="module")
def rerank_config(golden_dir) -> dict:
    return json.loads((golden_dir / "config_rerank.json").read_text())


@pytest.fixture(scope="module")
def rerank_model(golden_dir, rerank_config):
    return SAMAudio.from_pretrained(golden_dir, text_ranker=rerank_config["text_ranker"])


class RerankRun:
    """One separate() on e2e_rerank, recording the forward args, the decoder input and every ranker's call."""

    def __init__(self, model, processor, golden):
        self.tensors, self.meta = golden("e2e_rerank")
        t = self.tensors
        B = t["chosen"].shape[0]
        audios = [t[f"audio_in_{b}"] for b in range(B)]
        batch = processor(descriptions=self.meta["descriptions"], audios=audios)
        self.batch = batch
        self.forward_args, self.decoded, self.member = [], [], {}
        forward, decode = model.forward, model.audio_codec.decode
        members = dict(model.text_ranker.rankers.items())

        def recording_forward(**kwargs):
            if not self.forward_args:
                self.forward_args.append({k: v.clone() for k, v in kwargs.items() if v is not None})
            return forward(**kwargs)

        def recording_decode(latent, message=None):
            self.decoded.append(latent.clone())
            return decode(latent, message=message)

        def recorder(name, ranker):
            def run(**kwargs):
                scores = type(ranker).forward(ranker, **kwargs)
                self.member[name] = (kwargs, scores)
                return scores

            return run

        model.forward, model.audio_codec.decode = recording_forward, recording_decode
        for name, ranker in members.items():
            ranker.forward = recorder(name, ranker)
        try:
            self.result = model.separate(
                batch,
                noise=t["noise"],
                ode_opt=self.meta["ode_opt"],
                reranking_candidates=self.meta["K"],
                watermark_message=t["wm_message"],
            )
        finally:
            del model.forward, model.audio_codec.decode
            for ranker in members.values():
                del ranker.forward


@pytest.fixture(scope="module")
def run(rerank_model, golden_processor, golden) -> RerankRun:
    return RerankRun(rerank_model, golden_processor, golden)


def test_rerank_batch_matches(run):
    t = run.tensors
    assert torch.equal(run.batch.sizes, t["batch_sizes"])
    assert torch.equal(run.batch.wav_sizes, t["batch_wav_sizes"])
    assert torch.equal(run.batch.audio_pad_mask, t["batch_audio_pad_mask"])


def test_rerank_forward_args_repeat_each_item_k_times(run):
    t = run.tensors
    args = run.forward_args[0]
    for name in ("audio_features", "text_features", "masked_video_features", "anchor_alignment", "audio_pad_mask",
                 "text_mask", "anchor_ids"):
        expected = t[f"fwd_{name}"]
        if expected.is_floating_point():
            close(args[name], expected)
        else:
            assert torch.equal(args[name].to(expected.dtype), expected), name


def test_rerank_ode_final_and_decoder_input_match(run):
    t = run.tensors
    decoded = run.decoded[0]  # (2N, C, T)
    close(decoded, t["decode_in"])
    N, T, C2 = t["ode_final"].shape
    close(decoded.reshape(N, C2, T).transpose(1, 2), t["ode_final"])


def test_rerank_rankers_get_every_candidate_target_and_the_cut_mixture(run):
    t = run.tensors
    for name, (kwargs, _) in run.member.items():
        K = run.meta["K"]
        for b, (cand, mix) in enumerate(zip(kwargs["extracted_audio"], kwargs["input_audio"])):
            close(cand, t[f"cand_target_{b}"], atol=WAV_ATOL, rtol=0)
            expected = t[f"rank_input_audio_{b}"]  # (1, L'): batch.audios[b][:, :sizes*hop], repeated K times
            assert mix.shape == (K, expected.shape[-1]), name
            torch.testing.assert_close(mix, expected.expand(K, -1), atol=0, rtol=0)
        assert kwargs["descriptions"] == run.meta["descriptions"]
        assert kwargs["sample_rate"] == run.meta["sample_rate"]


def test_rerank_member_and_ensemble_scores_match(run):
    t = run.tensors
    close(run.member["clap"][1], t["scores_clap"])
    close(run.member["judge"][1], t["scores_judge"])
    close(run.result.scores, t["scores_ensemble"])
    weights = run.meta["weights"]
    expected = sum(weights[name] * scores for name, (_, scores) in run.member.items())
    close(run.result.scores, expected, atol=1e-6, rtol=0)  # raw weights, no normalisation


def test_rerank_returns_the_chosen_candidate(run):
    t = run.tensors
    assert run.result.chosen.tolist() == t["chosen"].tolist()
    assert run.result.ranker == "text_ranker"
    for b in range(t["chosen"].shape[0]):
        close(run.result.target[b], t[f"target_{b}"], atol=WAV_ATOL, rtol=0)
        close(run.result.residual[b], t[f"residual_{b}"], atol=WAV_ATOL, rtol=0)


# ---------------------------------------------------------------------------------------------- loading


@pytest.fixture(scope="module")
def rerank_folder(golden_dir, rerank_config, tmp_path_factory):
    """A model folder whose config.json names the ensemble text ranker (the official form)."""
    folder = tmp_path_factory.mktemp("rerank-model")
    for item in golden_dir.iterdir():
        if item.name != "config.json":
            (folder / item.name).symlink_to(item)
    (folder / "config.json").write_text(json.dumps(rerank_config))
    return folder


def test_plain_load_builds_no_ranker_even_when_the_config_names_one(rerank_folder, golden_model):
    model = SAMAudio.from_pretrained(rerank_folder)
    assert model.text_ranker is None and model.visual_ranker is None
    assert not any(k.startswith(("text_ranker.", "visual_ranker.")) for k in model.state_dict())
    count = sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers())
    plain = sum(p.numel() for p in golden_model.parameters()) + sum(b.numel() for b in golden_model.buffers())
    assert count == plain


def test_text_ranker_true_builds_the_configs_ensemble_in_config_order(rerank_folder, rerank_config):
    model = SAMAudio.from_pretrained(rerank_folder, text_ranker=True)
    assert isinstance(model.text_ranker, EnsembleRanker)
    members = rerank_config["text_ranker"]["rankers"]
    assert list(model.text_ranker.rankers) == list(members)
    assert model.text_ranker.weights == {name: entry[1] for name, entry in members.items()}
    assert any(k.startswith("text_ranker.rankers.judge.") for k in model.state_dict())
    # saved models leave ranker weights out (each ranker loads its own), so they reload without asking
    saved = model.save_pretrained(rerank_folder.parent / "saved")
    assert SAMAudio.from_pretrained(saved).text_ranker is None


def test_text_ranker_true_without_a_configured_ranker_is_a_config_error(golden_dir):
    with pytest.raises(ConfigError, match="names no text_ranker"):
        SAMAudio.from_pretrained(golden_dir, text_ranker=True)


def test_judge_config_that_does_not_fit_its_weights_is_one_checkpoint_error_naming_keys(golden_dir, tmp_path):
    folder = tmp_path / "judge"
    shutil.copytree(golden_dir / "judge", folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["bottleneck_dim"] += 1
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"shape mismatch.*(cat_audio_proj|layer_norm|text_proj2)"):
        SAMAudio.from_pretrained(golden_dir, text_ranker={"kind": "judge", "checkpoint_or_model_id": str(folder)})


def test_parse_ranker_config_leaves_the_callers_dict_alone(rerank_config):
    given = json.loads(json.dumps(rerank_config["text_ranker"]))
    parsed = parse_ranker_config(given)
    assert given == rerank_config["text_ranker"]
    assert parse_ranker_config(given) == parsed  # parsing twice works (the official parser pops "kind")


@pytest.mark.parametrize(
    "config, match",
    [
        ({"kind": "sound_activity"}, "sound_activity"),
        ({"kind": "ensemble", "rankers": {"s": [{"kind": "sound_activity"}, 1.0]}}, "sound_activity"),
        ({"kind": "nonesuch"}, "known kinds"),
        ({"kind": "clap", "chekpoint": None}, "unknown key 'chekpoint'"),
        ({"kind": "ensemble", "rankers": {"clap": [{"kind": "clap"}]}}, r"\[member config, weight\]"),
    ],
)
def test_bad_ranker_configs_are_named_config_errors(config, match):
    with pytest.raises(ConfigError, match=match):
        create_ranker(config)


# ---------------------------------------------------------------------------------------------- selection rules


class FixedScores(Ranker):
    """A ranker returning given scores; records that it ran."""

    def __init__(self, scores: torch.Tensor):
        super().__init__()
        self.scores, self.calls = scores, []

    def forward(self, **kwargs):
        self.calls.append(kwargs)
        return self.scores


def choose(text=None, visual=None, K=3, videos=None):
    model = _SAMAudio.__new__(_SAMAudio)
    torch.nn.Module.__init__(model)
    model.text_ranker, model.visual_ranker = text, visual
    model.audio_codec = type("Codec", (), {"sample_rate": 48000})()
    targets = [torch.zeros(K, 10), torch.zeros(K, 8)]
    mixtures = [torch.ones(1, 10), torch.ones(1, 8)]
    return model.choose_candidates(targets, mixtures=mixtures, descriptions=["a", "b"], masked_videos=videos)


def test_visual_ranker_decides_when_masked_videos_are_given():
    text = FixedScores(torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]))
    visual = FixedScores(torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])[..., None])  # ImageBind's (B, K, 1)
    choice = choose(text, visual, videos=[torch.zeros(2, 3, 4, 4)] * 2)
    assert choice.chosen.tolist() == [2, 1] and choice.ranker == "visual_ranker" and not text.calls
    assert choice.scores.shape == (2, 3)


def test_text_ranker_decides_without_videos_and_gets_the_mixture_per_candidate():
    text = FixedScores(torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]))
    visual = FixedScores(torch.zeros(2, 3, 1))
    choice = choose(text, visual)
    assert choice.chosen.tolist() == [1, 0] and choice.ranker == "text_ranker" and not visual.calls
    assert [m.shape for m in text.calls[0]["input_audio"]] == [(3, 10), (3, 8)]


def test_ties_go_to_the_lowest_index():
    choice = choose(FixedScores(torch.tensor([[0.0, 2.0, 2.0], [5.0, 5.0, 5.0]])))
    assert choice.chosen.tolist() == [1, 0]


def test_no_ranker_or_one_candidate_keeps_candidate_zero():
    assert choose().chosen.tolist() == [0, 0] and choose().scores is None
    single = FixedScores(torch.tensor([[1.0], [1.0]]))
    assert choose(single, K=1).ranker is None and not single.calls


def test_candidates_without_a_ranker_return_candidate_zero(golden_model, golden_processor, golden):
    t, meta = golden("e2e_rerank")
    batch = golden_processor(descriptions=meta["descriptions"][:1], audios=[t["audio_in_0"]])
    K, wm, ode = 2, t["wm_message"], {"method": "euler", "options": {"step_size": 0.5}}
    noise = t["noise"][:K]
    one = golden_model.separate(batch, noise=noise[:1], ode_opt=ode, watermark_message=wm[:2])
    many = golden_model.separate(batch, noise=noise, ode_opt=ode, reranking_candidates=K, watermark_message=wm[: 2 * K])
    assert many.scores is None and many.chosen.tolist() == [0] and many.noise.shape[0] == K
    close(many.target[0], one.target[0], atol=WAV_ATOL, rtol=0)


def test_noise_for_candidates_must_have_b_times_k_rows(golden_model, golden_processor, golden):
    t, meta = golden("e2e_rerank")
    batch = golden_processor(descriptions=meta["descriptions"][:1], audios=[t["audio_in_0"]])
    with pytest.raises(InvalidRequestError, match=r"1 item\(s\) x 3 candidate\(s\)"):
        golden_model.separate(batch, noise=t["noise"][:2], reranking_candidates=3)
    with pytest.raises(InvalidRequestError, match="at least 1"):
        golden_model.separate(batch, reranking_candidates=0)


def test_rankers_stay_float32_in_a_bfloat16_model(golden_dir, rerank_config, golden_processor, golden):
    clap = rerank_config["text_ranker"]["rankers"]["clap"][0]
    model = SAMAudio.from_pretrained(golden_dir, dtype="bfloat16", text_ranker=clap)
    assert model.proj.weight.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in model.text_ranker.parameters())
    t, meta = golden("e2e_rerank")
    batch = golden_processor(descriptions=meta["descriptions"][:1], audios=[t["audio_in_0"]])
    result = model.separate(batch, ode_opt={"method": "euler", "options": {"step_size": 1.0}}, reranking_candidates=2)
    assert result.scores.shape == (1, 2) and torch.isfinite(result.scores).all()


def test_predicted_spans_are_found_once_per_item_and_condition_every_candidate(golden_dir, golden_processor, golden):
    # candidate 0 of each item, given the golden noise and watermark rows, is the golden single-candidate result
    base = json.loads((golden_dir / "config.json").read_text())
    spans = json.loads((golden_dir / "config_spans.json").read_text())
    overrides = {k: v for k, v in spans.items() if base.get(k) != v and k != "span_predictor"}
    model = SAMAudio.from_pretrained(golden_dir, span_predictor=spans["span_predictor"], **overrides)
    t, meta = golden("e2e_spans_pr100")
    B, K = t["noise"].shape[0], 2
    batch = golden_processor(descriptions=meta["descriptions"], audios=[t[f"audio_in_{b}"] for b in range(B)])
    g = torch.Generator().manual_seed(0)
    noise = torch.stack([t["noise"], torch.randn(t["noise"].shape, generator=g)], dim=1).flatten(0, 1)  # row b*K + k
    wm = t["wm_message"].view(B, 1, 2, -1)
    wm = torch.cat([wm, torch.randint(0, 2, wm.shape, generator=g).float()], dim=1).flatten(0, 2)  # (2*B*K, 16)
    result = model.separate(
        batch, noise=noise, ode_opt=meta["ode_opt"], predict_spans=True, reranking_candidates=K, watermark_message=wm
    )
    assert result.spans == meta["spans"] and result.chosen.tolist() == [0] * B
    for b in range(B):
        close(result.target[b], t[f"target_{b}"], atol=WAV_ATOL, rtol=0)
