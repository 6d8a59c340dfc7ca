"""The demo end to end on the default synthetic corpus: each baseline solves the labels its
modality carries and stays at chance on the labels it cannot see."""

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
    assert set(result["dev_scores"]) <= {"0.1", "0.01", "0.001", "0.0001", "1e-05"} and len(result["dev_scores"]) >= 3
    assert result["dev_scores"][f"{result['chosen_lr']:g}"] == max(result["dev_scores"].values())
    return result["test_score"]


def test_fbank_hears_emotion_but_not_action(demo):
    work, _ = demo
    assert score(work, "fbank", "er", "audio") >= 60  # chance 25
    assert score(work, "fbank", "ar", "audio") <= 45


def test_hog_sees_action_but_not_emotion(demo):
    work, _ = demo
    assert score(work, "hog", "ar", "video") >= 80
    assert score(work, "hog", "er", "video") <= 45


def test_audio_carried_events_and_speakers(demo):
    work, _ = demo
    assert score(work, "fbank", "aec", "audio") >= 70  # chance mAP ~ 30 (the positive rate)
    assert score(work, "hog", "aec", "video") <= 45
    assert score(work, "fbank", "asv", "audio") <= 45  # EER, chance 50
    assert score(work, "hog", "asv", "video") >= 40


def test_asr_learns_the_transcripts_from_either_track(demo):
    # speech is audible (formants) and visible (mouth shapes); chance, an empty output, is CER 100
    work, _ = demo
    assert score(work, "fbank", "asr", "audio") <= 90
    assert score(work, "hog", "asr", "video") <= 90


def test_demo_prints_a_table_of_every_model_track_and_task(demo):
    _, table = demo
    lines = table.splitlines()
    assert any(line.startswith("fbank") and "audio" in line for line in lines)
    assert any(line.startswith("hog") and "video" in line for line in lines)
    assert any(line.startswith("chance") and "25.0" in line for line in lines)
    assert "er accuracy ↑" in table and "ar accuracy ↑" in table and "asv eer ↓" in table
