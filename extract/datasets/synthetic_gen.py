"""Deterministic synthetic audio-visual corpus for running the AV-SUPERB pipeline offline.

Each clip is a real mp4 (H.264/MPEG-4 video + ALAC mono audio) carrying five labels:

* ``transcript`` -- letter tokens (100 ms each) audible as formant pairs and visible as mouth shapes;
* ``speaker`` -- voice timbre only (f0, F3/F4 resonances, spectral tilt, harmonic pattern, breathiness);
* ``emotion`` -- prosody only (pitch level/contour, loudness, brightness);
* ``events`` -- multi-label non-speech sounds (audio only);
* ``action`` -- stripe orientation of a bouncing patch (video only; its bounce thud is class-agnostic).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

logger = logging.getLogger(__name__)

# bump when the rendering changes (2: 24 speakers with F3/F4 timbre, flatter harmonics; 3: larger mouth
# shapes, formant-shaped aspiration, half the emotions' spectral tilt, a milder per-speaker harmonic pattern:
# the characters were hard to tell apart from single frames, and ASR stayed near chance)
SYNTHETIC_VERSION = 3

CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ'"
LEXICON = (
    "THE", "CAT", "DOG", "RED", "BLUE", "SUN", "RUN", "SIT", "BIG", "HOT", "COLD", "FISH",
    "BIRD", "TREE", "BOX", "CUP", "HAT", "PEN", "MAP", "KEY", "DON'T", "CAN'T", "IT'S",
    "YES", "NO", "GO", "UP", "ZIP", "JAM", "VAN", "WAX", "QUIZ",
)
EVENTS = ("beep", "chirp", "hiss", "knock", "whistle", "rumble")
ACTIONS = ("stripes000", "stripes045", "stripes090", "stripes135")
EMOTIONS = ("neu", "hap", "ang", "sad")
N_SPEAKERS, N_TRAIN_SPEAKERS = 24, 16
SPEAKERS = tuple(f"spk{i:02d}" for i in range(N_SPEAKERS))

# Fixed per-character table: grid cell (F1 level, F2 level) -> formants and mouth opening.
_F1 = np.array([300.0, 430.0, 570.0, 720.0, 880.0])
_F2 = np.array([950.0, 1250.0, 1550.0, 1870.0, 2220.0, 2600.0])
_MOUTH_H = np.array([6.0, 12.0, 18.0, 24.0, 30.0])  # full opening height (px at size 128)
_MOUTH_W = np.array([24.0, 32.0, 40.0, 48.0, 56.0, 64.0])  # full width (px at size 128)
F1_WIDTH, F2_WIDTH = 90.0, 140.0  # formant half-widths (Hz)
ASPIRATION = 1.0  # formant-shaped noise beside the harmonic source (relative RMS)
_CELLS = np.random.default_rng(0x5EED).permutation(30)[: len(CHARS)]
CHAR_TABLE: dict[str, tuple[float, float, float, float]] = {
    c: (_F1[k // 6], _F2[k % 6], _MOUTH_H[k // 6], _MOUTH_W[k % 6]) for c, k in zip(CHARS, _CELLS)
}
# emotion -> (pitch factor, contour slope over utterance, amplitude, spectral tilt exponent)
_EMO = {"neu": (1.0, 0.0, 1.0, 0.0), "hap": (1.3, 0.5, 1.3, 0.2),
        "ang": (1.15, 0.0, 2.0, 0.5), "sad": (0.8, -0.4, 0.5, -0.4)}


@dataclass(frozen=True)
class SyntheticSpec:
    """Corpus size and rendering constants."""

    seed: int = 0
    n_train: int = 200
    n_dev: int = 60
    n_test: int = 60
    sample_rate: int = 16000
    fps: int = 25
    size: int = 128  # frames are size x size RGB
    token_s: float = 0.1  # one character / space
    event_prob: float = 0.3
    event_gain: float = 1.0  # scales every sound event
    thud_gain: float = 1.0  # scales the (class-agnostic) bounce thud of the action patch
    speech_rms: float = 0.07  # neutral speech RMS over voiced samples
    noise_rms: float = 0.003  # background white noise
    patch_px: int = 28  # action patch side (px at size 128)
    stripe_period: int = 8  # px
    crf: int = 10


@dataclass
class _Clip:
    cid: str
    split: str
    index: int
    text: str
    speaker: int
    emotion: str
    action: int
    events: list[str]


def _balanced(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """n labels from range(k), as balanced as possible, shuffled."""
    return rng.permutation(np.resize(rng.permutation(k), n))


def _plan(spec: SyntheticSpec) -> list[_Clip]:
    """Draw every clip's labels from spec.seed."""
    rng = np.random.default_rng([spec.seed, 0])
    clips: list[_Clip] = []
    for split, n in (("train", spec.n_train), ("dev", spec.n_dev), ("test", spec.n_test)):
        spk_pool = np.arange(N_TRAIN_SPEAKERS) if split != "test" else np.arange(N_TRAIN_SPEAKERS, N_SPEAKERS)
        spk = spk_pool[_balanced(rng, n, len(spk_pool))]
        # emotions cycle within each speaker (random order) -> balanced overall and per speaker
        emo = np.resize(rng.permutation(len(EMOTIONS)), n)[np.argsort(np.lexsort((rng.random(n), spk)))]
        act = _balanced(rng, n, len(ACTIONS))
        ev = np.zeros((n, len(EVENTS)), bool)
        for j in range(len(EVENTS)):  # exactly ~p*n positives per class and split
            ev[rng.permutation(n)[: int(round(spec.event_prob * n))], j] = True
        for i in range(n):
            while True:
                words = rng.choice(len(LEXICON), size=int(rng.integers(2, 4)))
                text = " ".join(LEXICON[w] for w in words)
                if len(text) <= 14:
                    break
            idx = len(clips)
            clips.append(_Clip(f"syn{idx:05d}", split, idx, text, int(spk[i]), EMOTIONS[emo[i]],
                               int(act[i]), [e for e, on in zip(EVENTS, ev[i]) if on]))
    return clips


def _speakers(spec: SyntheticSpec) -> list[dict[str, Any]]:
    """Per-speaker timbre: base f0, F3/F4 resonances (above every character's F1/F2, so they do
    not blur the transcript), tilt, a mild harmonic amplitude pattern, breathiness."""
    rng = np.random.default_rng([spec.seed, 1])
    f0s = np.linspace(90.0, 200.0, N_SPEAKERS)[rng.permutation(N_SPEAKERS)]
    f3s = np.linspace(2900.0, 3700.0, N_SPEAKERS)[rng.permutation(N_SPEAKERS)]
    f4s = np.linspace(4200.0, 5600.0, N_SPEAKERS)[rng.permutation(N_SPEAKERS)]
    return [{"f0": float(f0s[s]), "f3": float(f3s[s]), "f4": float(f4s[s]), "tilt": float(rng.uniform(0.9, 1.3)),
             "pattern": np.exp(0.1 * rng.standard_normal(128)), "phase": rng.uniform(0, 2 * np.pi, 128),
             "breath": float(rng.uniform(0.05, 0.35))} for s in range(N_SPEAKERS)]


def _band_noise(rng: np.random.Generator, n: int, lo: float, hi: float, sr: int, tilt: float = 0.0) -> np.ndarray:
    """Unit-RMS noise band-limited to [lo, hi] Hz, amplitude spectrum ~ f**tilt."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / sr)
    spec *= (np.maximum(f, 1.0) / 1000.0) ** tilt
    spec[(f < lo) | (f > hi)] = 0
    x = np.fft.irfft(spec, n)
    return x / (np.sqrt(np.mean(x**2)) + 1e-12)


def _ramp(n: int, sr: int, r_s: float = 0.01) -> np.ndarray:
    """Flat window with raised-cosine on/off ramps."""
    w = np.ones(n)
    r = min(int(r_s * sr), n // 2)
    if r > 0:
        h = 0.5 - 0.5 * np.cos(np.pi * np.arange(r) / r)
        w[:r], w[n - r:] = h, h[::-1]
    return w


def _event(name: str, rng: np.random.Generator, sr: int) -> np.ndarray:
    """One occurrence of a sound event."""
    if name == "knock":
        n = int(0.4 * sr)
        t = np.arange(int(0.08 * sr)) / sr
        thump = 0.6 * np.sin(2 * np.pi * 150 * t) * np.exp(-t / 0.03)
        x = np.zeros(n)
        for k in range(4):
            x[int(k * 0.1 * sr):int(k * 0.1 * sr) + len(thump)] += thump
        return x
    dur = {"beep": 0.3, "chirp": 0.5, "hiss": 0.5, "whistle": 0.5, "rumble": 0.6}[name]
    n = int(dur * sr)
    t = np.arange(n) / sr
    if name == "beep":
        x = 0.15 * np.sin(2 * np.pi * 3500 * t)
    elif name == "chirp":
        x = 0.2 * np.sin(2 * np.pi * (1000 * t + 0.5 * (3000 / dur) * t**2))
    elif name == "whistle":
        x = 0.15 * np.sin(2 * np.pi * 2200 * t - (60 / 6) * np.cos(2 * np.pi * 6 * t))
    elif name == "hiss":
        x = 0.06 * _band_noise(rng, n, 5000, 7500, sr)
    else:
        x = 0.12 * _band_noise(rng, n, 40, 120, sr)
    return x * _ramp(n, sr, 0.02)


def _thud(sr: int) -> np.ndarray:
    """Class-agnostic bounce sound."""
    t = np.arange(int(0.06 * sr)) / sr
    return 0.3 * np.sin(2 * np.pi * 420 * t) * np.exp(-t / 0.012)


def _bounce(p0: float, v: float, length: float, t: np.ndarray, dur: float) -> tuple[np.ndarray, np.ndarray]:
    """Reflected 1-D trajectory in [0, length] sampled at t, and its bounce times in [0, dur)."""
    m = np.mod(p0 + v * t, 2 * length)
    pos = np.where(m <= length, m, 2 * length - m)
    s0, s1 = sorted((p0, p0 + v * dur))
    ks = np.arange(np.floor(s0 / length) + 1, np.ceil(s1 / length))
    return pos, (ks * length - p0) / v


def _speech(spec: SyntheticSpec, c: _Clip, spk: dict[str, Any], lead: int, n: int,
            rng: np.random.Generator) -> np.ndarray:
    """Formant tokens excited by a harmonic source at the speaker's (emotion-modulated) pitch."""
    sr, tok = spec.sample_rate, int(round(spec.token_s * spec.sample_rate))
    m = len(c.text) * tok
    code = np.repeat([CHARS.find(ch) for ch in c.text], tok)  # -1 for space
    voiced = code >= 0
    f1 = np.array([CHAR_TABLE[ch][0] if ch != " " else 500.0 for ch in c.text]).repeat(tok)
    f2 = np.array([CHAR_TABLE[ch][1] if ch != " " else 1500.0 for ch in c.text]).repeat(tok)
    env = np.tile(_ramp(tok, sr, 0.012), len(c.text)) * voiced
    pf, slope, gain, etilt = _EMO[c.emotion]
    u = np.arange(m) / m
    f0 = spk["f0"] * pf * rng.uniform(0.97, 1.03) * (1.0 + slope * (u - 0.5))
    phase = 2 * np.pi * np.cumsum(f0) / sr
    nh = int(min(127, 6500 // f0.min()))
    h = np.arange(1, nh + 1)[:, None]
    blk = 40  # harmonic amplitudes vary slowly: evaluate them every 2.5 ms
    fh = h * f0[None, ::blk]
    formant = (1 / (1 + ((fh - f1[::blk]) / F1_WIDTH) ** 2) + 0.8 / (1 + ((fh - f2[::blk]) / F2_WIDTH) ** 2)
               + 0.6 / (1 + ((fh - spk["f3"]) / 200) ** 2) + 0.5 / (1 + ((fh - spk["f4"]) / 250) ** 2) + 0.12)
    amp = spk["pattern"][1:nh + 1, None] * (fh / 200.0) ** (etilt - spk["tilt"]) * formant * (fh < 7500)
    amp = np.repeat(amp.astype(np.float32), blk, axis=1)[:, :m]
    ph = (h * phase[None, :] + spk["phase"][1:nh + 1, None]).astype(np.float32)
    x = np.einsum("ht,ht->t", amp, np.sin(ph)).astype(np.float64)
    x /= np.sqrt(np.mean(x[voiced] ** 2)) + 1e-12
    x += spk["breath"] * _band_noise(rng, m, 300, 7000, sr, etilt - 0.5)
    x += ASPIRATION * _aspiration(c.text, tok, sr, np.random.default_rng([spec.seed, 4, c.index]))
    x *= env
    x *= spec.speech_rms * gain / (np.sqrt(np.mean(x[voiced] ** 2)) + 1e-12)
    out = np.zeros(n)
    out[lead:lead + m] = x
    return out


def _aspiration(text: str, tok: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Noise through each character's F1/F2 resonances (unit RMS per character): the formant
    envelope, visible whatever the pitch, as breathy speech shows it between sparse harmonics."""
    f = np.fft.rfftfreq(tok, 1.0 / sr)
    out = np.zeros(len(text) * tok)
    for j, ch in enumerate(text):
        if ch == " ":
            continue
        f1, f2 = CHAR_TABLE[ch][:2]
        shape = 1 / (1 + ((f - f1) / F1_WIDTH) ** 2) + 0.8 / (1 + ((f - f2) / F2_WIDTH) ** 2)
        seg = np.fft.irfft(np.fft.rfft(rng.standard_normal(tok)) * shape, tok)
        out[j * tok:(j + 1) * tok] = seg / (np.sqrt(np.mean(seg**2)) + 1e-12)
    return out


def _render(spec: SyntheticSpec, c: _Clip, spk: dict[str, Any], path: Path) -> float:
    """Render one clip to `path`; returns its duration in seconds."""
    rng = np.random.default_rng([spec.seed, 2, c.index])
    sr, fps, size = spec.sample_rate, spec.fps, spec.size
    spf = sr // fps  # samples per video frame (exact for 16 kHz / 25 fps)
    tok = int(round(spec.token_s * sr))
    lead = int(rng.integers(20, 51)) * sr // 100
    speech_end = lead + len(c.text) * tok
    n = speech_end + int(rng.integers(20, 51)) * sr // 100
    n = max(n, int(1.5 * sr))
    n = -(-n // spf) * spf  # whole number of video frames
    nf, dur = n // spf, n / sr

    audio = _speech(spec, c, spk, lead, n, rng) + spec.noise_rms * rng.standard_normal(n)
    for name in c.events:
        ev = spec.event_gain * _event(name, rng, sr)
        start = int(rng.integers(0, max(1, n - len(ev))))
        seg = ev[: n - start]
        audio[start:start + len(seg)] += seg

    # --- video: static texture, mouth, bouncing striped patch
    s = size / 128.0
    lo = rng.uniform(-1, 1, (size // 16 + 1, size // 16 + 1, 3))
    tex = np.kron(lo, np.ones((16, 16, 1)))[:size, :size] * 10 + rng.uniform(-4, 4, (size, size, 3))
    bg = np.clip(rng.uniform(110, 150) + tex, 0, 255).astype(np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cy, cx = 82 * s, size / 2 - 0.5

    def mouth(hgt: float, wid: float) -> np.ndarray:
        a, b = wid * s / 2, max(hgt * s / 2, 0.6)
        d = (np.sqrt(((xx - cx) / a) ** 2 + ((yy - cy) / b) ** 2) - 1) * b
        return np.clip(0.5 - d, 0, 1)[..., None]

    lips = np.array([45, 15, 20], np.float32)
    faces = {ch: (bg * (1 - a) + lips * a).astype(np.uint8) for ch, a in
             [(ch, mouth(CHAR_TABLE[ch][2], CHAR_TABLE[ch][3])) for ch in set(c.text) - {" "}]
             + [(" ", mouth(0.0, 28.0))]}
    p = max(8, int(round(spec.patch_px * s)))
    th = np.deg2rad(45.0 * c.action)
    py, px = np.mgrid[0:p, 0:p]
    stripes = np.sin(2 * np.pi * (px * np.cos(th) + py * np.sin(th)) / spec.stripe_period + rng.uniform(0, 6.3))
    patch = np.where(stripes >= 0, 225, 30)[..., None].astype(np.uint8)
    t = np.arange(nf) / fps
    len_x, len_y = size - p - 4 * s, max(1.0, 60 * s - p)
    vx = rng.uniform(50, 110) * s * rng.choice([-1, 1])
    vy = rng.uniform(30, 70) * s * rng.choice([-1, 1])
    xs, bx = _bounce(rng.uniform(0, len_x), vx, len_x, t, dur)
    ys, by = _bounce(rng.uniform(0, len_y), vy, len_y, t, dur)
    thud = spec.thud_gain * _thud(sr)
    for tb in np.concatenate([bx, by]):
        k = int(round(tb * sr))
        seg = thud[: n - k]
        audio[k:k + len(seg)] += seg
    peak = np.abs(audio).max()
    if peak > 0.99:
        audio *= 0.99 / peak
    pcm = np.round(audio * 32767).astype(np.int16)

    frames = np.empty((nf, size, size, 3), np.uint8)
    for k in range(nf):
        i = (k * spf - lead) // tok
        ch = c.text[i] if 0 <= k * spf - lead and i < len(c.text) else " "
        frames[k] = faces[ch]
        x0, y0 = int(round(2 * s + xs[k])), int(round(2 * s + ys[k]))
        frames[k, y0:y0 + p, x0:x0 + p] = patch
    _write_mp4(path, frames, pcm, spec)
    return dur


def video_codec() -> str:
    """libx264 when this PyAV build can encode it, else mpeg4."""
    try:
        av.codec.Codec("libx264", "w")
        return "libx264"
    except Exception:  # noqa: BLE001 - encoder missing in this build
        return "mpeg4"


def _write_mp4(path: Path, frames: np.ndarray, pcm: np.ndarray, spec: SyntheticSpec) -> None:
    """Mux RGB frames and int16 mono PCM into an mp4 (libx264 or mpeg4 video + ALAC audio)."""
    with av.open(str(path), "w", format="mp4") as out:
        if video_codec() == "libx264":
            v = out.add_stream("libx264", rate=spec.fps)
            v.options = {"crf": str(spec.crf), "preset": "veryfast", "bframes": "0", "threads": "1"}
        else:
            v = out.add_stream("mpeg4", rate=spec.fps)
            v.bit_rate = 4_000_000
            v.options = {"qmin": "1", "qmax": "3", "bf": "0", "threads": "1"}
        v.width = v.height = spec.size
        v.pix_fmt = "yuv420p"
        a = out.add_stream("alac", rate=spec.sample_rate)
        a.layout = "mono"
        a.format = "s16p"
        for k, img in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(img, format="rgb24")
            vf.pts, vf.time_base = k, Fraction(1, spec.fps)
            out.mux(v.encode(vf))
        out.mux(v.encode())
        af = av.AudioFrame.from_ndarray(pcm[None, :], format="s16p", layout="mono")
        af.sample_rate, af.pts, af.time_base = spec.sample_rate, 0, Fraction(1, spec.sample_rate)
        out.mux(a.encode(af))
        out.mux(a.encode())


def _trials(rng: np.random.Generator, test: list[_Clip], max_target: int = 300) -> list[list[Any]]:
    """Same-speaker (1) and equally many different-speaker (0) pairs over test clips."""
    pairs = list(itertools.combinations(test, 2))
    same = [(a.cid, b.cid) for a, b in pairs if a.speaker == b.speaker]
    diff = [(a.cid, b.cid) for a, b in pairs if a.speaker != b.speaker]
    if len(same) > max_target:
        same = [same[i] for i in sorted(rng.choice(len(same), max_target, replace=False))]
    n_diff = min(len(same), len(diff))
    diff = [diff[i] for i in sorted(rng.choice(len(diff), n_diff, replace=False))] if n_diff else []
    return [[a, b, 1] for a, b in same] + [[a, b, 0] for a, b in diff]


def generate(root: Path, spec: SyntheticSpec = SyntheticSpec(), progress: bool = True) -> Path:
    """Render the corpus into `root` (atomically: render into a sibling temp dir, then rename;
    if root/manifest.json exists, return at once). Returns root/manifest.json."""
    root = Path(root)
    manifest_path = root / "manifest.json"
    if manifest_path.exists():
        old = json.loads(manifest_path.read_text())
        if old.get("version") != SYNTHETIC_VERSION or old.get("spec") != json.loads(json.dumps(asdict(spec))):
            logger.warning("%s holds a synthetic corpus of another version/spec; keeping it", root)
        logger.info("synthetic corpus already present at %s", root)
        return manifest_path
    if spec.sample_rate % spec.fps:
        raise ValueError("sample_rate must be a multiple of fps (whole audio samples per video frame)")
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} exists, is not empty and holds no manifest.json")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    tmp.chmod(0o755)
    try:
        (tmp / "clips").mkdir()
        clips, speakers = _plan(spec), _speakers(spec)
        it: Any = clips
        if progress:
            from tqdm import tqdm

            it = tqdm(clips, desc="synthetic corpus", unit="clip")
        logger.info("rendering %d synthetic clips into %s", len(clips), root)
        entries = []
        for c in it:
            dur = _render(spec, c, speakers[c.speaker], tmp / "clips" / f"{c.cid}.mp4")
            entries.append({"id": c.cid, "path": f"clips/{c.cid}.mp4", "split": c.split, "duration": dur,
                            "labels": {"events": c.events, "action": ACTIONS[c.action], "transcript": c.text,
                                       "speaker": SPEAKERS[c.speaker], "emotion": c.emotion}})
        manifest = {
            "name": "synthetic", "version": SYNTHETIC_VERSION, "spec": asdict(spec),
            "labels": {
                "events": {"kind": "multi", "classes": list(EVENTS), "carried_by": "audio"},
                "action": {"kind": "class", "classes": list(ACTIONS), "carried_by": "video"},
                "transcript": {"kind": "text", "carried_by": "audio+video"},
                "speaker": {"kind": "class", "classes": list(SPEAKERS), "carried_by": "audio"},
                "emotion": {"kind": "class", "classes": list(EMOTIONS), "carried_by": "audio"}},
            "clips": entries,
            "trials": _trials(np.random.default_rng([spec.seed, 3]), [c for c in clips if c.split == "test"]),
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
        if root.exists():
            root.rmdir()  # empty (checked above); os.replace needs it gone or empty
        os.replace(tmp, root)
    except OSError:
        if manifest_path.exists():  # a concurrent generate() won the race
            shutil.rmtree(tmp, ignore_errors=True)
            return manifest_path
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("synthetic corpus written to %s", root)
    return manifest_path
