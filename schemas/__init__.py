"""The store and result layouts, defined once for both stages.

Array paths and attribute keys are named here; the JSON Schemas beside this file validate the
root attributes of a store and the result JSON of a probe run.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

import jsonschema

STORE_SCHEMA_VERSION = 1
RESULT_SCHEMA_VERSION = 1

TRACKS = ("audio", "video", "fusion")
SPLITS = ("train", "dev", "test")
LABEL_KINDS = ("class", "multi", "text")

# Root attribute holding the store description (validated by store.schema.json).
ROOT_ATTR = "avsuperb"
# Root attribute set while a writer holds the store (pid@host), removed on clean exit.
WRITER_ATTR = "avsuperb_writer"

# clips/ group: one row per clip, in dataset order.
CLIPS = "clips"
CLIP_ID = "clips/id"
CLIP_SPLIT = "clips/split"
CLIP_DURATION = "clips/duration"
CLIP_STATUS = "clips/status"
CLIP_REASON = "clips/reason"
LABELS = "clips/labels"
TRIALS = "clips/trials"  # [M, 3] int64: enrolment row, test row, target (1) / non-target (0)

STATUS_PENDING = 0
STATUS_DONE = 1
STATUS_FAILED = 2


def label_path(name: str) -> str:
    return f"{LABELS}/{name}"


def pooled_path(track: str) -> str:
    """[N, L, D] float32: per-layer mean over the clip's valid frames."""
    return f"{track}/pooled"


def frames_path(track: str) -> str:
    """[sum of capacities, L, D] float16: frame-level features, clip i at offsets[i]:offsets[i]+lengths[i]."""
    return f"{track}/frames"


def offsets_path(track: str) -> str:
    """[N + 1] int64: where each clip's reserved frame slot starts."""
    return f"{track}/offsets"


def lengths_path(track: str) -> str:
    """[N] int64: valid frames of each clip (0 until the clip is done)."""
    return f"{track}/lengths"


def clip_stat_path(track: str, stat: str) -> str:
    """Per-clip frame statistics, reduced over a split into stats/: count [N], l2 [N, L], sumsq [N, L, D]."""
    return f"{track}/clip_stats/{stat}"


def stats_path(track: str, stat: str) -> str:
    """Train-split statistics: count [] , l2_sum [L], sum [L, D], sumsq [L, D], l2_mean [L]."""
    return f"{track}/stats/{stat}"


@cache
def load_schema(name: str) -> dict[str, Any]:
    text = resources.files(__name__).joinpath(f"{name}.schema.json").read_text()
    return json.loads(text)


def validate(name: str, document: Any) -> None:
    """Raise jsonschema.ValidationError if `document` breaks schemas/{name}.schema.json."""
    jsonschema.validate(document, load_schema(name))


def validation_error(name: str, document: Any) -> str | None:
    """The first problem of `document` against the schema, as one line, or None."""
    try:
        validate(name, document)
    except jsonschema.ValidationError as err:
        where = "/".join(str(p) for p in err.absolute_path) or "(root)"
        return f"{where}: {err.message}"
    return None
