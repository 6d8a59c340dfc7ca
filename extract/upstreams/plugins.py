"""Upstreams from outside this repository: `module.path:factory`, `path/to/file.py:factory`, or an
installed package's entry point in the group `avsuperb.upstreams` (name -> factory).

A factory is a class or callable taking `checkpoint=` and `device=` keywords (plus any model
options) and returning an `Upstream`. What it returns is wrapped in `PluginUpstream`, which checks
it (an Upstream, at least one known track, sane TrackInfo), checks its output on the first clip
(per track, a list of `num_layers` tensors [T, dim]) and on every clip after that, turns whatever
it raises outside the per-clip ValueError/RuntimeError contract into a one-line UpstreamError
naming the plug-in, and records where it came from: the store's upstream config holds its source
(module, file path or entry point) and its checkpoint hash is the `--checkpoint` file's sha256, or
without one, the sha256 of the source file that defines the factory.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import json
import logging
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from avsuperb.extract.upstreams.base import REGISTRY, TrackInfo, Upstream, UpstreamError
from avsuperb.extract.upstreams.checkpoint import one_line

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "avsuperb.upstreams"
KNOWN_TRACKS = ("audio", "video", "fusion")
FORMS = "module.path:factory, path/to/file.py:factory, or an installed entry point name"
FIRST_CLIP_TRIES = 5  # clips tried (in dataset order) for one that decodes, for the first-clip check
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class PluginSource:
    """Where a plug-in's factory came from (what the store records about it)."""

    spec: str  # as given on the command line
    kind: str  # "module", "file" or "entry point"
    source: str  # the module name, the file's absolute path, or the entry point's `module:attr`
    factory: str  # the factory's name inside it
    source_file: Path | None  # the file whose sha256 stands for the weights when there is no checkpoint
    distribution: str | None = None  # "name version" of the package that declares an entry point

    def record(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "source": self.source, "factory": self.factory}
        if self.kind == "entry point":
            out["entry_point"] = self.spec
            out["distribution"] = self.distribution
        return out


def is_spec(name: str) -> bool:
    """A `--model` that names a plug-in by module or file (rather than a registered name)."""
    return ":" in name


def entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    """Installed plug-ins by name (the first distribution that declares a name wins)."""
    found: dict[str, importlib.metadata.EntryPoint] = {}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in found:
            log.warning("upstream entry point %r is declared twice (%s and %s); using the first", ep.name, found[ep.name].value, ep.value)
            continue
        found[ep.name] = ep
    return found


def entry_point_names() -> list[str]:
    return sorted(entry_points())


# ----------------------------------------------------------------------------------- loading
def load_factory(spec: str) -> tuple[Callable[..., Any], PluginSource]:
    """The factory a spec names, and where it came from."""
    if is_spec(spec):
        where, _, attr = spec.rpartition(":")
        if not where or not attr:
            raise UpstreamError(f"plug-in {spec!r}: expected {FORMS}")
        if where.endswith(".py") or "/" in where or "\\" in where:
            module, path = _import_file(spec, where)
            kind, source = "file", str(path)
        else:
            module = _import_module(spec, where)
            kind, source = "module", where
        factory = _attribute(spec, module, attr)
        return factory, PluginSource(spec, kind, source, attr, _source_file(factory, module))
    ep = entry_points().get(spec)
    if ep is None:
        raise UpstreamError(f"no installed plug-in {spec!r} in the entry-point group {ENTRY_POINT_GROUP}")
    try:
        factory = ep.load()
    except Exception as err:  # noqa: BLE001 - anything the plug-in's import raises is its error, in one line
        raise UpstreamError(f"plug-in {spec!r} (entry point {ep.value}): loading it raised {one_line(err)}") from None
    dist = getattr(ep, "dist", None)
    distribution = f"{dist.name} {dist.version}" if dist is not None else None
    module = sys.modules.get(ep.module)
    return factory, PluginSource(spec, "entry point", ep.value, ep.attr or "", _source_file(factory, module), distribution)


def _import_module(spec: str, name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name and (name == err.name or name.startswith(err.name + ".")):
            raise UpstreamError(f"plug-in {spec!r}: no module {name!r} on the Python path (a file needs its .py suffix or a '/')") from None
        raise UpstreamError(f"plug-in {spec!r}: importing {name} raised {one_line(err)}") from None
    except Exception as err:  # noqa: BLE001
        raise UpstreamError(f"plug-in {spec!r}: importing {name} raised {one_line(err)}") from None


def _import_file(spec: str, where: str) -> tuple[Any, Path]:
    """Execute a .py file as a fresh module (its folder on sys.path meanwhile, as when run as a script)."""
    path = Path(where).expanduser().resolve()
    if not path.is_file():
        raise UpstreamError(f"plug-in {spec!r}: no file {where}")
    stem = re.sub(r"\W", "_", path.stem)
    name = f"_avsuperb_plugin_{stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
    loader_spec = importlib.util.spec_from_file_location(name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise UpstreamError(f"plug-in {spec!r}: {path} cannot be imported as Python")
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[name] = module  # classes defined in it find their module (dataclasses, inspect, pickle)
    folder = str(path.parent)
    sys.path.insert(0, folder)
    try:
        loader_spec.loader.exec_module(module)
    except Exception as err:  # noqa: BLE001
        sys.modules.pop(name, None)
        raise UpstreamError(f"plug-in {spec!r}: executing {path} raised {one_line(err)}") from None
    finally:
        if folder in sys.path:
            sys.path.remove(folder)
    return module, path


def _attribute(spec: str, module: Any, attr: str) -> Callable[..., Any]:
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            public = sorted(n for n, v in vars(module).items() if not n.startswith("_") and callable(v))
            where = getattr(module, "__file__", None) if module.__name__.startswith("_avsuperb_plugin_") else module.__name__
            raise UpstreamError(f"plug-in {spec!r}: {where} has no {attr!r}; it defines: {', '.join(public) or 'nothing callable'}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise UpstreamError(f"plug-in {spec!r}: {attr} is a {type(obj).__name__}, not a class or function")
    return obj


def _source_file(factory: Any, module: Any) -> Path | None:
    for get in (lambda: inspect.getsourcefile(factory), lambda: getattr(module, "__file__", None)):
        try:
            found = get()
        except (TypeError, OSError):
            continue
        if found and Path(found).is_file():
            return Path(found).resolve()
    return None


# ----------------------------------------------------------------------------------- building
def build(spec: str, checkpoint: Path | None = None, device: str = "cpu", options: dict[str, Any] | None = None) -> PluginUpstream:
    """Load, build and check the plug-in `spec` (module:factory, file.py:factory or an entry point name)."""
    factory, source = load_factory(spec)
    try:
        inner = factory(checkpoint=checkpoint, device=device, **(options or {}))
    except UpstreamError as err:
        raise UpstreamError(f"plug-in {spec!r}: {err}") from None
    except Exception as err:  # noqa: BLE001
        raise UpstreamError(f"plug-in {spec!r}: building it raised {one_line(err)}") from None
    return PluginUpstream(inner, source, checkpoint, device)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _sha256_tree(root: Path) -> str:
    """Over a directory's files, sorted by relative path (each path, then its bytes)."""
    digest = hashlib.sha256()
    for p in sorted(q for q in root.rglob("*") if q.is_file()):
        digest.update(p.relative_to(root).as_posix().encode() + b"\0")
        digest.update(_sha256_file(p).encode())
    return digest.hexdigest()


class PluginUpstream(Upstream):
    """A user's upstream, checked and recorded with where it came from; the model is `inner`."""

    name = "plugin"

    def __init__(self, inner: Any, source: PluginSource, checkpoint: Path | None = None, device: str = "cpu") -> None:
        super().__init__(checkpoint, device)
        self.source = source
        self.spec = source.spec
        if not isinstance(inner, Upstream):
            raise UpstreamError(
                f"plug-in {self.spec!r}: {source.factory} returned a {type(inner).__name__}, not an Upstream "
                "(subclass avsuperb.extract.upstreams.Upstream)"
            )
        self.inner = inner
        own = getattr(inner, "name", None)
        self.name = own if isinstance(own, str) and own else source.factory.rpartition(".")[2]  # type: ignore[misc]
        self.sample_rate = inner.sample_rate  # type: ignore[misc]
        self.video_fps = inner.video_fps  # type: ignore[misc]
        self._tracks = self._check_tracks()
        self._config = self._check_config()
        self._sha256 = self._weights_sha256()
        self._checked = False

    # -- what it declares
    def _fail(self, what: str) -> UpstreamError:
        return UpstreamError(f"plug-in {self.spec!r}: {what}")

    def _check_tracks(self) -> dict[str, TrackInfo]:
        try:
            tracks = self.inner.tracks
        except Exception as err:  # noqa: BLE001
            raise self._fail(f"reading its tracks raised {one_line(err)}") from None
        if not isinstance(tracks, dict) or not tracks:
            raise self._fail(f"declares no tracks (its `tracks` is {tracks!r}); return e.g. {{'audio': TrackInfo(num_layers, dim, frame_rate)}}")
        for track, info in tracks.items():
            if track not in KNOWN_TRACKS:
                raise self._fail(f"declares a track {track!r}; tracks are {', '.join(KNOWN_TRACKS)}")
            if not isinstance(info, TrackInfo):
                raise self._fail(f"track {track!r} is described by a {type(info).__name__}, not a TrackInfo")
            if info.num_layers < 1 or info.dim < 1 or info.frame_rate < 0 or info.frames_per_clip < 0:
                raise self._fail(f"track {track!r} declares {info}; layers and dim must be >= 1, rates >= 0")
            try:
                sample_rate, fps = self.inner.needs([track])
            except Exception as err:  # noqa: BLE001
                raise self._fail(f"needs([{track!r}]) raised {one_line(err)}") from None
            if sample_rate is None and fps is None:
                raise self._fail(f"track {track!r} reads no stream: set sample_rate (audio) or video_fps (video)")
            if sample_rate is not None and (not isinstance(sample_rate, int) or sample_rate <= 0):
                raise self._fail(f"sample_rate must be a positive int, not {sample_rate!r}")
            if fps is not None and (not isinstance(fps, (int, float)) or not fps > 0):
                raise self._fail(f"video_fps must be a positive number, not {fps!r}")
        return dict(tracks)

    def _check_config(self) -> dict[str, Any]:
        try:
            cfg = self.inner.config()
            json.dumps(cfg)
        except Exception as err:  # noqa: BLE001
            raise self._fail(f"config() must return a JSON-serialisable dict; it gave {one_line(err)}") from None
        if not isinstance(cfg, dict):
            raise self._fail(f"config() must return a dict, not a {type(cfg).__name__}")
        return cfg

    def _weights_sha256(self) -> str | None:
        """The checkpoint's sha256 (the plug-in's own when it defines checkpoint_sha256), else its source file's."""
        if self.checkpoint is not None:
            if type(self.inner).checkpoint_sha256 is not Upstream.checkpoint_sha256:
                try:
                    own = self.inner.checkpoint_sha256()
                except Exception as err:  # noqa: BLE001
                    raise self._fail(f"checkpoint_sha256() raised {one_line(err)}") from None
                if own is not None:
                    if not isinstance(own, str) or not _SHA256.fullmatch(own):
                        raise self._fail(f"checkpoint_sha256() must return 64 lowercase hex digits, not {own!r}")
                    return own
            path = Path(self.checkpoint)
            return _sha256_tree(path) if path.is_dir() else _sha256_file(path)
        if self.source.source_file is None:
            log.warning("plug-in %s: no source file found to hash; the store records no weights hash", self.spec)
            return None
        return _sha256_file(self.source.source_file)

    @property
    def tracks(self) -> dict[str, TrackInfo]:
        return self._tracks

    def config(self) -> dict[str, Any]:
        hashed = "checkpoint" if self.checkpoint is not None else f"source file {self.source.source_file}"
        return {"plugin": self.source.record(), "weights_sha256_of": hashed, "model": self._config}

    def checkpoint_sha256(self) -> str | None:
        return self._sha256

    def needs(self, tracks: list[str]) -> tuple[int | None, float | None]:
        return self.inner.needs(tracks)

    # -- what it computes
    def _call(self, what: str, run: Callable[[], Any]) -> Any:
        """ValueError/RuntimeError stay per-clip failures (the run records them and goes on); anything else is the plug-in's bug."""
        try:
            return run()
        except (ValueError, RuntimeError, UpstreamError):
            raise
        except Exception as err:  # noqa: BLE001
            raise self._fail(f"{what} raised {one_line(err)}") from None

    def forward(self, track: str, audio: torch.Tensor | None, video: torch.Tensor | None) -> list[torch.Tensor]:
        return self._call("forward", lambda: self.inner.forward(track, audio, video))

    def check_first_clip(self, tracks: list[str], audio: np.ndarray | None, video: np.ndarray | None, clip: str = "the first clip") -> None:
        """Run `forward` per track on one clip and check each result: a list of num_layers tensors [T, dim].
        Any failure is an UpstreamError: a plug-in that cannot do one clip is not run over the dataset."""
        a = torch.from_numpy(audio).to(self.device) if audio is not None else None
        v = torch.from_numpy(video).to(self.device) if video is not None else None
        for track in tracks:
            info = self._tracks[track]
            try:
                with torch.inference_mode():
                    layers = self.inner.forward(track, a, v)
            except Exception as err:  # noqa: BLE001
                raise self._fail(f"forward({track!r}) on {clip} raised {one_line(err)}") from None
            if not isinstance(layers, (list, tuple)) or not all(isinstance(x, torch.Tensor) for x in layers):
                kind = type(layers).__name__ if not isinstance(layers, (list, tuple)) else "a list holding " + ", ".join(sorted({type(x).__name__ for x in layers}))
                raise self._fail(f"forward({track!r}) on {clip} returned {kind}; expected a list of {info.num_layers} torch tensors [T, {info.dim}]")
            if len(layers) != info.num_layers:
                raise self._fail(f"forward({track!r}) on {clip} returned {len(layers)} layers; its tracks declare {info.num_layers}")
            shapes = [tuple(x.shape) for x in layers]
            if any(len(s) != 2 or s[1] != info.dim or s[0] < 1 for s in shapes) or len(set(shapes)) > 1:
                raise self._fail(
                    f"forward({track!r}) on {clip} returned layers of shape {', '.join(map(str, sorted(set(shapes))))}; "
                    f"expected {info.num_layers} of [T, {info.dim}] with the same T >= 1"
                )
            if info.frames_per_clip and shapes[0][0] != info.frames_per_clip:
                raise self._fail(f"forward({track!r}) on {clip} returned {shapes[0][0]} frames; its tracks declare {info.frames_per_clip} per clip")
        self._checked = True
        self._output(tracks, self._call("extract", lambda: self.inner.extract(tracks, audio, video)), first=True, clip=clip)

    def check_on(self, tracks: list[str], clips: Sequence[Any], sample_rate: int | None, fps: float | None, fill: bool) -> None:
        """`check_first_clip` on the first of the dataset's clips that decodes (before anything is written)."""
        from avsuperb.extract.media import MediaError, decode

        for clip in list(clips)[:FIRST_CLIP_TRIES]:
            try:
                media = decode(clip.path, sample_rate=sample_rate, fps=fps, start=clip.start, end=clip.start + clip.duration, fill_missing=fill)
            except MediaError as err:
                log.debug("first-clip check: clip %s does not decode (%s); trying the next", clip.id, err)
                continue
            self.check_first_clip(tracks, media.audio, media.video, clip=f"clip {clip.id}")
            return
        log.warning("plug-in %s: none of the first %d clips decodes; its output is checked on the first clip it gets", self.spec, FIRST_CLIP_TRIES)

    def _output(self, tracks: list[str], out: Any, first: bool = False, clip: str = "a clip") -> dict[str, np.ndarray]:
        if not isinstance(out, dict) or set(out) != set(tracks):
            have = sorted(out) if isinstance(out, dict) else type(out).__name__
            raise self._fail(f"extract on {clip} returned {have}; expected a dict with the tracks {', '.join(tracks)}")
        result = {}
        for track in tracks:
            info = self._tracks[track]
            x = out[track]
            x = x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float32)
            if x.ndim != 3 or x.shape[1:] != (info.num_layers, info.dim):
                raise self._fail(f"extract on {clip} returned {track!r} features of shape {x.shape}; expected [T, {info.num_layers}, {info.dim}]")
            if x.shape[0] < 1:
                if first:
                    raise self._fail(f"extract on {clip} returned no frames for {track!r}")
                raise ValueError(f"{self.spec} returned no {track} frames for this clip")
            if not np.isfinite(x).all():
                bad = int(np.sum(~np.isfinite(x)))
                if first:
                    raise self._fail(f"extract on {clip} returned {bad} non-finite values for {track!r}")
                raise ValueError(f"{self.spec} returned {bad} non-finite {track} values for this clip")
            result[track] = x.astype(np.float32, copy=False)
        return result

    def extract(self, tracks: list[str], audio: np.ndarray | None, video: np.ndarray | None) -> dict[str, np.ndarray]:
        if not self._checked:
            self.check_first_clip(tracks, audio, video)
        return self._output(tracks, self._call("extract", lambda: self.inner.extract(tracks, audio, video)))

    def extract_batch(
        self, tracks: list[str], items: list[tuple[np.ndarray | None, np.ndarray | None]]
    ) -> list[dict[str, np.ndarray]]:
        if not self._checked and items:
            self.check_first_clip(tracks, *items[0])
        outs = self._call("extract_batch", lambda: self.inner.extract_batch(tracks, items))
        if not isinstance(outs, (list, tuple)) or len(outs) != len(items):
            n = len(outs) if isinstance(outs, (list, tuple)) else type(outs).__name__
            raise self._fail(f"extract_batch of {len(items)} clips returned {n} results")
        return [self._output(tracks, o) for o in outs]


# ----------------------------------------------------------------------------------- listing
@dataclass(frozen=True)
class ModelInfo:
    """One line of `--list-models`: a model's name, where it comes from and what it offers."""

    name: str
    source: str
    summary: str
    tracks: dict[str, TrackInfo] | None  # None: it cannot say without weights
    note: str = ""


def describe_tracks(tracks: dict[str, TrackInfo]) -> str:
    parts = []
    for t, i in tracks.items():
        when = f"{i.frames_per_clip} frames per clip" if i.frames_per_clip else f"at {i.frame_rate:g} Hz"
        parts.append(f"{t}: {i.num_layers} x {i.dim} {when}")
    return "; ".join(parts)


def _summary(obj: Any) -> str:
    doc = inspect.getdoc(obj) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def _offers(make: Callable[[], Upstream]) -> tuple[dict[str, TrackInfo] | None, str]:
    """What a model offers when built without a checkpoint; None and why where that needs weights."""
    try:
        return dict(make().tracks), ""
    except UpstreamError as err:
        return None, str(err).splitlines()[0] if str(err) else "needs --checkpoint"
    except Exception as err:  # noqa: BLE001 - a plug-in that cannot be built bare is listed by name and source
        return None, one_line(err)


def catalogue() -> list[ModelInfo]:
    """Built-in models (registration order), then installed plug-ins by name."""
    out = []
    for name, cls in REGISTRY.items():
        tracks, _ = _offers(lambda cls=cls: cls(checkpoint=None, device="cpu"))
        out.append(ModelInfo(name, f"built-in ({cls.__module__})", _summary(cls), tracks, "" if tracks is not None else "needs --checkpoint"))
    for name, ep in sorted(entry_points().items()):
        if name in REGISTRY:
            log.warning("installed plug-in %r (%s) is shadowed by the built-in model of that name", name, ep.value)
            continue
        dist = getattr(ep, "dist", None)
        source = f"entry point {ep.value}" + (f" ({dist.name} {dist.version})" if dist is not None else "")
        tracks, note = _offers(lambda name=name: build(name))
        summary = ""
        if tracks is not None:
            try:
                summary = _summary(ep.load())
            except Exception:  # noqa: BLE001 - it loaded a moment ago; a summary is optional
                summary = ""
        out.append(ModelInfo(name, source, summary, tracks, "" if tracks is not None else f"needs weights to say what it offers ({note})"))
    return out
