"""The shipped samaudio-demo model separates: on held-out mixtures its target stems are much closer to the
prompted sound than the mixture is, and a prompt for a sound that is not there gets a near-silent stem."""

from __future__ import annotations

import statistics

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("fast_bss_eval")

from samaudio.model import catalog  # noqa: E402
from samaudio.train import data, evaluate  # noqa: E402

MIN_MEDIAN_SI_SDRI_DB = 6.0  # the shipped model's aim on the whole held-out set (it scores about 10 dB on these 8)


@pytest.fixture(scope="module")
def demo_model():
    known = catalog.find("samaudio-demo")
    assert known is not None and known.trained, "the trained samaudio-demo weights ship in samaudio/shipped/"
    model, _ = catalog.load("samaudio-demo", device="cpu")
    return model


def test_the_shipped_demo_model_improves_si_sdr_on_held_out_mixtures(demo_model):
    examples = [e for e in data.held_out(16) if e.present][:8]
    scores = evaluate.score_examples(demo_model, examples)
    gains = [s.si_sdri for s in scores]
    assert statistics.median(gains) > MIN_MEDIAN_SI_SDRI_DB, gains
    assert sum(g > 0 for g in gains) >= 6, gains  # not one lucky class: most stems beat their mixture


def test_a_prompt_for_an_absent_sound_gets_a_near_silent_stem(demo_model):
    examples = [e for e in data.held_out(40) if not e.present][:3]
    scores = evaluate.score_examples(demo_model, examples)
    assert all(s.target_energy_db < -10 for s in scores), [s.target_energy_db for s in scores]
