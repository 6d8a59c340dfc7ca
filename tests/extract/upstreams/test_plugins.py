"""Plug-in upstreams: the example end to end, the three ways to name one, and the checks that turn a
broken plug-in into one error line (exit code 2) before anything is written."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from avsuperb import schemas as S
from avsuperb.extract import upstreams
from avsuperb.extract.run import ExtractOptions, run_extraction
from avsuperb.extract.upstreams import UpstreamError
from avsuperb.extract.upstreams.plugins import PluginUpstream, catalogue
from avsuperb.store import open_backend

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "examples" / "my_upstream.py"
EXTRACT = "avsuperb-extract"

TINY = '''
import torch
from avsuperb.extract.upstreams import TrackInfo, Upstream


class Tiny(Upstream):
    """Three scaled copies of four per-10-ms statistics."""

    name = "tiny_plugin"
    sample_rate = 16000

    @property
    def tracks(self):
        return {"audio": TrackInfo(3, 4, 100.0)}

    def config(self):
        return {"stats": ["mean", "std", "max", "power"]}

    def forward(self, track, audio, video):
        frames = audio[: len(audio) // 160 * 160].view(-1, 160)
        feats = torch.stack([frames.mean(1), frames.std(1), frames.abs().amax(1), frames.pow(2).mean(1)], dim=1)
        return [feats * (i + 1) for i in range(3)]


def make_tiny(checkpoint=None, device="cpu"):
    return Tiny(checkpoint=checkpoint, device=device)
'''

# case -> (extra source, factory, words the error line must hold)
BROKEN = {
    "forward-raises": ("class Bad(Tiny):\n    def forward(self, track, audio, video):\n        raise RuntimeError('boom in forward')\n",
                       "Bad", ("raised", "boom in forward")),
    "init-raises": ("class Bad(Tiny):\n    def __init__(self, checkpoint=None, device='cpu'):\n        raise KeyError('no such setting')\n",
                    "Bad", ("building it raised", "no such setting")),
    "wrong-dim": ("class Bad(Tiny):\n    def forward(self, track, audio, video):\n        return [x[:, :3] for x in super().forward(track, audio, video)]\n",
                  "Bad", ("shape", "[T, 4]")),
    "wrong-layer-count": ("class Bad(Tiny):\n    def forward(self, track, audio, video):\n        return super().forward(track, audio, video)[:2]\n",
                          "Bad", ("returned 2 layers", "declare 3")),
    "no-tracks": ("class Bad(Tiny):\n    @property\n    def tracks(self):\n        return {}\n", "Bad", ("declares no tracks",)),
    "not-an-upstream": ("def Bad(checkpoint=None, device='cpu'):\n    return {'audio': 1}\n", "Bad", ("not an Upstream",)),
    "no-such-factory": ("", "Missing", ("has no 'Missing'", "Tiny")),
}


def write_plugin(folder: Path, name: str, extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.py"
    path.write_text(TINY + "\n\n" + extra)
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cli(*args: object, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name(EXTRACT)
    return subprocess.run([str(script), *map(str, args)], cwd=cwd, env={**os.environ, **(env or {})},
                          capture_output=True, text=True, timeout=300)


def test_example_plugin_extracts_and_probes(small_corpus, tmp_path):
    """The example's docstring command (its relative spec, from the repository root), then an ER probe."""
    from avsuperb.extract.media import decode
    from avsuperb.probe.config import load_config
    from avsuperb.probe.run import run_probe

    out = tmp_path / "x.zarr"
    r = cli("--model", "examples/my_upstream.py:MyUpstream", "--dataset", "synthetic", "--root", small_corpus,
            "--out", out, "--no-progress", cwd=REPO)
    assert r.returncode == 0, r.stderr
    b = open_backend(out, "r")
    attrs = b.get_attr(S.ROOT_ATTR)
    up = attrs["upstream"]
    assert up["name"] == "my_upstream"
    assert up["config"]["plugin"] == {"kind": "file", "source": str(EXAMPLE), "factory": "MyUpstream"}
    assert up["config"]["model"]["n_mels"] == 40
    assert up["checkpoint_sha256"] == sha256(EXAMPLE)  # no checkpoint: the plug-in's source stands for its weights
    assert attrs["tracks"]["audio"]["num_layers"] == 2 and attrs["tracks"]["audio"]["dim"] == 40
    ids = list(b.read(S.CLIP_ID))
    assert np.all(b.read(S.CLIP_STATUS) == S.STATUS_DONE)

    # the stored pooled vector is the example's own output, averaged over time
    sys.path.insert(0, str(EXAMPLE.parent))
    try:
        from my_upstream import MyUpstream
    finally:
        sys.path.remove(str(EXAMPLE.parent))
    clip = sorted((small_corpus / "clips").glob("*.mp4"))[0]
    duration = next(c["duration"] for c in json.loads((small_corpus / "manifest.json").read_text())["clips"] if c["id"] == clip.stem)
    audio = decode(clip, sample_rate=16000, fps=None, end=float(duration)).audio
    direct = MyUpstream().extract(["audio"], audio, None)["audio"].mean(axis=0)
    np.testing.assert_allclose(b.read(S.pooled_path("audio"))[ids.index(clip.stem)], direct, rtol=1e-4, atol=1e-4)

    cfg = load_config("er", None, ["steps=60", "eval_every=20", "patience=2", "lrs=1e-2,1e-3"])
    result = run_probe(out, "er", "audio", cfg, tmp_path / "probe", progress=False, device="cpu")
    assert result["upstream"]["name"] == "my_upstream" and len(result["layer_weights"]) == 2
    assert (tmp_path / "probe" / "result.json").is_file()


def test_module_and_file_forms_and_the_weights_hash(tmp_path, monkeypatch):
    folder = tmp_path / "plugs"
    path = write_plugin(folder, "tiny_plug_mod")
    monkeypatch.syspath_prepend(str(folder))
    wave = np.random.default_rng(0).standard_normal(16000).astype(np.float32)

    by_module = upstreams.build("tiny_plug_mod:Tiny")
    by_file = upstreams.build(f"{path}:make_tiny")  # a function is a factory too
    for up, kind, source, factory in ((by_module, "module", "tiny_plug_mod", "Tiny"), (by_file, "file", str(path.resolve()), "make_tiny")):
        assert isinstance(up, PluginUpstream) and up.name == "tiny_plugin"
        assert up.config() == {
            "plugin": {"kind": kind, "source": source, "factory": factory},
            "weights_sha256_of": f"source file {path.resolve()}",
            "model": {"stats": ["mean", "std", "max", "power"]},
        }
        assert up.checkpoint_sha256() == sha256(path)
        assert up.tracks["audio"].num_layers == 3
    a = by_module.extract(["audio"], wave, None)["audio"]
    assert a.shape == (100, 3, 4)
    np.testing.assert_array_equal(a, by_file.extract(["audio"], wave, None)["audio"])
    np.testing.assert_allclose(a[:, 2], 3 * a[:, 0], rtol=1e-6)

    ckpt = tmp_path / "weights.bin"
    ckpt.write_bytes(b"not really weights")
    assert upstreams.build(f"{path}:Tiny", checkpoint=ckpt).checkpoint_sha256() == sha256(ckpt)

    path.write_text(path.read_text() + "\n# edited\n")  # a changed plug-in is another model
    assert upstreams.build(f"{path}:Tiny").checkpoint_sha256() == sha256(path) != by_file.checkpoint_sha256()


def fake_distribution(site: Path, entry_points: str) -> None:
    """A tiny installed distribution 'fakeplug' (a .dist-info folder) declaring upstream entry points."""
    write_plugin(site, "fakeplug_upstreams")
    info = site / "fakeplug-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fakeplug\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[avsuperb.upstreams]\n" + entry_points)


def test_entry_point_plugins_are_listed_and_built_after_the_built_ins(tmp_path, monkeypatch):
    site = tmp_path / "site"
    fake_distribution(site, "fake_tiny = fakeplug_upstreams:Tiny\nfbank = fakeplug_upstreams:Tiny\n")
    monkeypatch.syspath_prepend(str(site))

    names = upstreams.available()
    assert "fake_tiny" in names and names.count("fbank") == 1 and names.index("fake_tiny") > names.index("hf")
    up = upstreams.build("fake_tiny")
    assert isinstance(up, PluginUpstream) and up.name == "tiny_plugin"
    assert up.config()["plugin"] == {"kind": "entry point", "source": "fakeplug_upstreams:Tiny", "factory": "Tiny",
                                     "entry_point": "fake_tiny", "distribution": "fakeplug 0.1"}
    assert up.checkpoint_sha256() == sha256(site / "fakeplug_upstreams.py")
    assert type(upstreams.build("fbank")).__name__ == "Fbank"  # a built-in name is never taken over

    listed = {m.name: m for m in catalogue()}
    assert listed["fake_tiny"].tracks == {"audio": upstreams.TrackInfo(3, 4, 100.0)}
    assert "fakeplug 0.1" in listed["fake_tiny"].source
    assert listed["fbank"].tracks == {"audio": upstreams.TrackInfo(1, 240, 100.0)} and listed["hubert"].tracks is None

    r = cli("--list-models", cwd=tmp_path, env={"PYTHONPATH": str(site)})
    assert r.returncode == 0, r.stderr
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("fake_tiny"))
    assert "audio: 3 x 4 at 100 Hz" in line and "fakeplug_upstreams:Tiny" in line
    assert any(ln.startswith("hubert") and "needs --checkpoint" in ln for ln in r.stdout.splitlines())


@pytest.mark.parametrize("case", ["forward-raises", "init-raises", "wrong-dim", "no-tracks", "not-an-upstream"])
def test_broken_plugin_is_one_error_line_and_exit_2_through_the_cli(case, small_corpus, tmp_path):
    extra, factory, words = BROKEN[case]
    write_plugin(tmp_path, "broken", extra)
    spec = f"broken.py:{factory}"
    r = cli("--model", spec, "--dataset", "synthetic", "--root", small_corpus, "--out", "x.zarr", "--no-progress", cwd=tmp_path)
    shown = f"rc={r.returncode}\n{r.stderr}"
    assert r.returncode == 2, shown
    assert "Traceback" not in r.stderr, shown
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{EXTRACT}: error: plug-in '{spec}'"), shown
    for word in words:
        assert word in lines[0], shown
    assert not (tmp_path / "x.zarr").exists()  # checked before anything is written


@pytest.mark.parametrize("case", ["wrong-layer-count", "no-such-factory"])
def test_broken_plugin_is_an_upstream_error_naming_it(case, tmp_path):
    extra, factory, words = BROKEN[case]
    path = write_plugin(tmp_path, "broken", extra)
    with pytest.raises(UpstreamError) as err:
        up = upstreams.build(f"{path}:{factory}")
        up.extract(["audio"], np.zeros(1600, np.float32), None)
    assert str(err.value).startswith(f"plug-in '{path}:{factory}'") and "\n" not in str(err.value)
    for word in words:
        assert word in str(err.value)


def test_bad_specs_are_one_line(tmp_path):
    for spec, words in ((f"{tmp_path}/none.py:X", "no file"), ("no_such_module_xyz:X", "no module"), ("nosuchmodel", "unknown model")):
        with pytest.raises(UpstreamError, match=words):
            upstreams.build(spec)


def test_a_later_clip_failing_is_recorded_but_wrong_shapes_stop_the_run(small_corpus, tmp_path):
    counting = (
        "class Flaky(Tiny):\n"
        "    calls = 0\n"
        "    def forward(self, track, audio, video):\n"
        "        type(self).calls += 1\n"
        "        if type(self).calls == 4:\n"
        "            raise ValueError('clip-level trouble')\n"
        "        out = super().forward(track, audio, video)\n"
        "        return out if type(self).calls < 8 or not self.drift else [x[:, :2] for x in out]\n"
        "    drift = False\n"
        "class Drifting(Flaky):\n"
        "    drift = True\n"
    )
    path = write_plugin(tmp_path, "flaky", counting)
    summary = run_extraction(ExtractOptions(f"{path}:Flaky", "synthetic", tmp_path / "a.zarr", small_corpus, progress=False))
    assert (summary.done, summary.failed) == (39, 1)  # a ValueError is one failed clip; the run goes on
    reason = [str(x) for x in open_backend(tmp_path / "a.zarr", "r").read(S.CLIP_REASON) if str(x)]
    assert reason == ["clip-level trouble"]
    with pytest.raises(UpstreamError, match=r"plug-in .*flaky.py:Drifting.* shape \(\d+, 3, 2\); expected \[T, 3, 4\]"):
        run_extraction(ExtractOptions(f"{path}:Drifting", "synthetic", tmp_path / "b.zarr", small_corpus, progress=False))


def test_plugin_options_and_device_reach_the_factory(tmp_path):
    path = write_plugin(tmp_path, "opts", "def Opt(checkpoint=None, device='cpu', scale=1.0):\n    t = Tiny(checkpoint, device)\n    t.scale = scale\n    return t\n")
    up = upstreams.build(f"{path}:Opt", options={"scale": 2.5})
    assert up.inner.scale == 2.5 and up.device == torch.device("cpu")
    with pytest.raises(UpstreamError, match="building it raised TypeError"):
        upstreams.build(f"{path}:Opt", options={"nope": 1})
