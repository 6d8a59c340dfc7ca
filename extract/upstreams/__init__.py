"""Upstream models, registered by name. Adding a model is adding one module here."""

from avsuperb.extract.upstreams.base import (
    REGISTRY,
    TrackInfo,
    Upstream,
    UpstreamError,
    available,
    build,
    register,
)
from avsuperb.extract.upstreams import av_hubert, avbert, fbank, hog, hubert, mavil, replai  # noqa: F401  (register built-ins)
from avsuperb.extract.upstreams import hf  # noqa: F401,E402  (transformers models from a local directory; listed last)

__all__ = ["REGISTRY", "TrackInfo", "Upstream", "UpstreamError", "available", "build", "register"]
