"""The built-in synthetic corpus: rendered on first use, so the pipeline runs with no download."""

from __future__ import annotations

import json
import os
from pathlib import Path

from avsuperb.extract.datasets.base import Clip, Dataset, DatasetError, DatasetIndex, LabelSpec, register
from avsuperb.extract.datasets.synthetic_gen import SYNTHETIC_VERSION, SyntheticSpec, generate


def default_root() -> Path:
    base = Path(os.environ.get("AVSUPERB_CACHE") or Path.home() / ".cache" / "avsuperb")
    return base / f"synthetic-v{SYNTHETIC_VERSION}"


@register
class Synthetic(Dataset):
    """Audio-visual clips with labels for all five tasks; rendered into --root (or the cache)."""

    name = "synthetic"
    description = "built-in synthetic corpus, rendered on first use (AEC, AR, ASR, ASV, ER labels)"
    tasks = ("aec", "ar", "asr", "asv", "er")
    layout = "nothing needed: rendered into --root (default: the user cache) on first use"

    def resolve_root(self, root: Path | None) -> Path:
        root = Path(root).expanduser() if root is not None else default_root()
        if not (root / "manifest.json").is_file():
            if root.exists() and any(root.iterdir()):
                raise DatasetError(f"{root} is not empty and holds no synthetic corpus; give an empty or new --root")
            generate(root, SyntheticSpec())
        return root

    def index(self) -> DatasetIndex:
        path = self.root / "manifest.json"
        try:
            doc = json.loads(path.read_text())
            labels = {
                name: LabelSpec(spec["kind"], tuple(spec.get("classes", ())), spec.get("carried_by"))
                for name, spec in doc["labels"].items()
            }
            clips = [
                Clip(c["id"], self.root / c["path"], c["split"], float(c["duration"]), c["labels"])
                for c in doc["clips"]
            ]
            trials = [(a, b, int(t)) for a, b, t in doc.get("trials", [])]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise DatasetError(f"{path} is not a valid synthetic manifest ({type(err).__name__}: {err})") from err
        return DatasetIndex(clips, labels, trials)
