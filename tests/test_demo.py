"""The demo end to end on the default synthetic corpus: each baseline solves the labels its
modality carries and stays at chance on the labels it cannot see.

Every learned score is deterministic on a given CPU (the probe pins its threads; the corpus and the
stores are bit-identical across thread counts and load: bench/determinism.py). Each bound keeps a
margin from the scores measured on the v3 corpus on this machine (Intel, AVX-512) and on an
emulated AVX2-only CPU (in the comment beside it; BENCHMARKS.md section 6), larger than the spread
between the two, so that another CPU generation's rounding cannot cross it."""

import json

import pytest

from avsuperb.demo import run_demo
from avsuperb.schemas import validate


@pytest.fixture(scope="module")
def demo(tmp_path_factory, default_corpus_root):
    work = tmp_path_factory.mktemp("demo")
    table = run_demo(work, default_corpus_root, ["eval_every=50"], progress=False)
    return work, table


def score(work, model, task, track):
    result = json.loads((work / "results" / f"{model}-synthetic" / f"{task}-{track}" / "result.json").read_text())
    validate("result", result)
    assert result["upstream"]["name"] == model and result["track"] == track and result["task"] == task
    assert set(result["dev_scores"]) <= {"0.1", "0.01", "0.001", "0.0001", "1e-05"} and len(result["dev_scores"]) >= 2
    assert result["dev_scores"][f"{result['chosen_lr']:g}"] == max(result["dev_scores"].values())
    return result["test_score"]


def test_fbank_hears_emotion_but_not_action(demo):
    work, _ = demo
    assert score(work, "fbank", "er", "audio") >= 60  # measured 70.0 (AVX2: 70.0), margin 10; chance 25
    assert score(work, "fbank", "ar", "audio") <= 45  # measured 20.0 (AVX2: 20.0), margin 25


def test_hog_sees_action_but_not_emotion(demo):
    work, _ = demo
    assert score(work, "hog", "ar", "video") >= 80  # measured 100 (AVX2: 100), margin 20
    assert score(work, "hog", "er", "video") <= 45  # measured 30.0 (AVX2: 30.0), margin 15


def test_audio_carried_events_and_speakers(demo):
    work, _ = demo
    assert score(work, "fbank", "aec", "audio") >= 70  # measured 97.2 (AVX2: 97.2), margin 27; chance mAP ~ 30, the positive rate
    assert score(work, "hog", "aec", "video") <= 45  # measured 32.8 (AVX2: 30.5), margin 12
    assert score(work, "fbank", "asv", "audio") <= 46  # EER, chance 50; measured 38.8 (AVX2: 32.7), margin 7
    assert score(work, "hog", "asv", "video") >= 40  # measured 47.4 (AVX2: 47.4), margin 7


def test_asr_learns_the_transcripts_from_either_track(demo):
    # speech is audible (formants) and visible (mouth shapes); chance, an empty output, is CER 100
    work, _ = demo
    assert score(work, "fbank", "asr", "audio") <= 88  # measured 78.6 (AVX2: 79.8), margin 8
    assert score(work, "hog", "asr", "video") <= 20  # measured 1.7 (AVX2: 2.1), margin 18


def test_demo_prints_a_table_of_every_model_track_and_task(demo):
    _, table = demo
    lines = table.splitlines()
    assert any(line.startswith("fbank") and "audio" in line for line in lines)
    assert any(line.startswith("hog") and "video" in line for line in lines)
    assert any(line.startswith("chance") and "25.0" in line for line in lines)
    assert "er accuracy ↑" in table and "ar accuracy ↑" in table and "asv eer ↓" in table
