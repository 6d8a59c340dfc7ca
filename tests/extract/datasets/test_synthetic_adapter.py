"""The synthetic dataset adapter: manifest in, clip table with every label kind out."""

import json
import shutil

import numpy as np
import pytest

from avsuperb.extract import datasets
from avsuperb.extract.datasets import DatasetError


def test_index_has_all_five_label_kinds_and_trials(small_corpus):
    ds = datasets.build("synthetic", small_corpus)
    index = ds.index()
    assert len(index.clips) == 40
    assert {"events", "action", "transcript", "speaker", "emotion"} <= set(index.labels)
    assert index.labels["events"].kind == "multi" and index.labels["transcript"].kind == "text"
    assert ds.has_transcripts(index)
    table = index.table()
    assert table.labels["emotion"].values.min() >= 0
    assert table.labels["events"].values.shape == (40, len(index.labels["events"].classes))
    assert set(table.splits) == {"train", "dev", "test"}
    assert all(c.path.is_file() for c in index.clips)
    if table.trials is not None and len(table.trials):
        assert np.all(np.asarray(table.splits)[table.trials[:, :2].ravel()] == "test")


def test_fingerprint_follows_the_labels(small_corpus, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(small_corpus, root)
    before = datasets.build("synthetic", root).index().fingerprint()
    assert datasets.build("synthetic", root).index().fingerprint() == before
    doc = json.loads((root / "manifest.json").read_text())
    doc["clips"][0]["labels"]["emotion"] = "sad" if doc["clips"][0]["labels"]["emotion"] != "sad" else "neu"
    (root / "manifest.json").write_text(json.dumps(doc))
    assert datasets.build("synthetic", root).index().fingerprint() != before


def test_broken_manifest_and_foreign_root_are_dataset_errors(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "manifest.json").write_text("{not json")
    with pytest.raises(DatasetError, match="not a valid synthetic manifest"):
        datasets.build("synthetic", bad).index()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(DatasetError, match="not empty"):
        datasets.build("synthetic", foreign)


def test_unknown_dataset_lists_choices():
    with pytest.raises(DatasetError, match="synthetic"):
        datasets.build("nope", None)
