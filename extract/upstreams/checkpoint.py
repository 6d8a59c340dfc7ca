"""Reading torch checkpoints safely, without the packages they were pickled with.

Released checkpoints (fairseq's above all) pickle more than tensors: omegaconf configs, fairseq
dictionaries and meters, enums, numpy scalars. `read_checkpoint` reads them with an unpickler
that resolves only an allow list (torch's own `weights_only` globals, plain builtin containers,
numpy's array/scalar rebuilders, `argparse.Namespace`); every other class becomes an inert
placeholder that records its arguments and state and runs nothing, so no fairseq or omegaconf
install is needed and nothing in the file is executed. omegaconf containers found this way are
turned back into plain dicts and lists; `plain` does the same for any config-like object.

Both of torch's file formats are read: the zip one (torch >= 1.6) and the legacy one.
"""

from __future__ import annotations

import _compat_pickle
import argparse
import copyreg
import importlib
import pickle
from collections import Counter, OrderedDict, defaultdict, deque
from pathlib import Path
from typing import Any

import torch

from avsuperb.extract.upstreams.base import UpstreamError

__all__ = ["fold_weight_norm", "one_line", "plain", "read_checkpoint"]

# How deep `plain` and the omegaconf pass go before giving up on a branch (configs are shallow).
_MAX_DEPTH = 100
# Bookkeeping attributes of a placeholder; a pickled state never overwrites them.
_RESERVED = ("_pickled_args", "_pickled_kwargs", "_pickled_state", "_pickled_items", "_pickled_list")


class _Placeholder:
    """Takes the place of a pickled object whose class is not on the allow list (omegaconf's
    DictConfig, fairseq's Dictionary, an Enum, a function...): it keeps the arguments, state,
    items and list elements unpickling gives it, and runs nothing. A dict state (the usual
    `__getstate__`) also becomes its attributes."""

    _pickled_name = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> _Placeholder:
        obj = object.__new__(cls)
        d = obj.__dict__
        d["_pickled_args"], d["_pickled_kwargs"], d["_pickled_state"] = args, kwargs, None
        d["_pickled_items"], d["_pickled_list"] = {}, []
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2 and (state[0] is None or isinstance(state[0], dict)) and (
            state[1] is None or isinstance(state[1], dict)
        ):  # (__dict__, __slots__ values)
            state = {**(state[0] or {}), **(state[1] or {})}
        self.__dict__["_pickled_state"] = state
        if isinstance(state, dict):
            self.__dict__.update({str(k): v for k, v in state.items() if str(k) not in _RESERVED})

    def __setitem__(self, key: Any, value: Any) -> None:  # SETITEMS on a pickled dict subclass
        self._pickled_items[key] = value

    def append(self, value: Any) -> None:  # APPENDS on a pickled list subclass
        self._pickled_list.append(value)

    def extend(self, values: Any) -> None:
        self._pickled_list.extend(values)

    def __call__(self, *args: Any, **kwargs: Any) -> _Placeholder:
        return self

    def __repr__(self) -> str:
        return f"<placeholder for {self._pickled_name}>"


_PLACEHOLDERS: dict[str, type[_Placeholder]] = {}


def _placeholder_class(full: str) -> type[_Placeholder]:
    if full not in _PLACEHOLDERS:
        name = full.rsplit(".", 1)[-1] or "Placeholder"
        _PLACEHOLDERS[full] = type(name, (_Placeholder,), {"_pickled_name": full, "__qualname__": f"Placeholder[{full}]"})
    return _PLACEHOLDERS[full]


_ALLOWED: dict[str, Any] | None = None


def _allowed_globals() -> dict[str, Any]:
    """Dotted name -> object for every global the unpickler resolves (computed once)."""
    global _ALLOWED
    if _ALLOWED is not None:
        return _ALLOWED
    allowed: dict[str, Any] = {}
    try:  # tensor and storage rebuilders, dtypes, Size, device, Parameter, OrderedDict...
        from torch import _weights_only_unpickler

        allowed.update(_weights_only_unpickler._get_allowed_globals())
    except (ImportError, AttributeError):  # private API: the rebuilders below still cover plain tensors
        pass
    for module in (torch._utils, torch._tensor):
        for name in dir(module):
            if name.startswith("_rebuild"):
                allowed[f"{module.__name__}.{name}"] = getattr(module, name)
    for name, value in list(vars(torch).items()):  # vars, not dir: no lazy submodule imports
        if isinstance(value, torch.dtype) or (isinstance(value, type) and name.endswith("Storage")):
            allowed[f"torch.{name}"] = value
    allowed.update({"torch.Size": torch.Size, "torch.device": torch.device, "torch.nn.parameter.Parameter": torch.nn.Parameter})
    for t in (set, frozenset, dict, list, tuple, slice, complex, float, int, str, bytes, bytearray, bool, range, object):
        allowed[f"builtins.{t.__name__}"] = t
    for t in (OrderedDict, defaultdict, deque, Counter):
        allowed[f"collections.{t.__name__}"] = t
    allowed["argparse.Namespace"] = argparse.Namespace
    allowed["copyreg._reconstructor"] = copyreg._reconstructor
    try:
        import numpy as np

        multiarray = importlib.import_module("numpy._core.multiarray" if hasattr(np, "_core") else "numpy.core.multiarray")
        for prefix in ("numpy.core.multiarray", "numpy._core.multiarray"):  # numpy 1.x and 2.x pickles
            allowed[f"{prefix}._reconstruct"] = multiarray._reconstruct
            allowed[f"{prefix}.scalar"] = multiarray.scalar
        allowed["numpy.ndarray"], allowed["numpy.dtype"] = np.ndarray, np.dtype
        dtypes = getattr(np, "dtypes", None)
        for name in dir(dtypes) if dtypes is not None else ():
            if name.endswith("DType"):
                allowed[f"numpy.dtypes.{name}"] = getattr(dtypes, name)
    except ImportError:
        pass
    _ALLOWED = allowed
    return allowed


class _SafeUnpickler(pickle.Unpickler):
    """Resolves allow-listed globals only, importing nothing; any other global is a placeholder."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _compat_pickle.NAME_MAPPING:  # protocol-2 pickles name Python 2's modules
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        full = f"{module}.{name}"
        allowed = _allowed_globals()
        return allowed[full] if full in allowed else _placeholder_class(full)


class _SafePickleModule:
    """A `pickle_module` for torch.load, which subclasses its Unpickler (keeping find_class)."""

    Unpickler = _SafeUnpickler

    @staticmethod
    def load(f: Any, **kwargs: Any) -> Any:
        return _SafeUnpickler(f, **kwargs).load()


def one_line(err: BaseException) -> str:
    """`Type: first line of the message` (at most 200 characters of it), for one-line errors."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:200] if text else ''}".rstrip(": ")


def read_checkpoint(path: Path, model: str, *, expected: str = "") -> Any:
    """Unpickle a torch checkpoint file (zip or legacy format) safely: tensors, containers, numpy
    scalars/arrays, argparse.Namespace are rebuilt; any other pickled class (omegaconf, fairseq, ...)
    becomes an inert placeholder whose state is kept, and omegaconf DictConfig/ListConfig
    placeholders are converted back to plain dicts/lists. Nothing from the file is executed.
    Raises UpstreamError (one line, starting with f"{model}: ") when the file is missing,
    truncated, not a torch checkpoint, etc.; `expected`, if given, is appended as "; expected ..."."""
    path = Path(path).expanduser()
    hint = f"; expected {expected}" if expected else ""
    if not path.exists():
        raise UpstreamError(f"{model}: checkpoint {path} does not exist{hint}")
    if not path.is_file():
        raise UpstreamError(f"{model}: checkpoint {path} is not a file{hint}")
    try:
        obj = torch.load(path, map_location="cpu", pickle_module=_SafePickleModule, weights_only=False)
    except Exception as err:  # truncated zip, random bytes, empty file...: all the user's file
        raise UpstreamError(f"{model}: cannot read {path} as a PyTorch checkpoint ({one_line(err)}){hint}") from None
    return _unwrap_omegaconf(obj, set(), 0)


def _is_container_config(obj: Any) -> bool:
    """An omegaconf DictConfig/ListConfig placeholder: its pickled state has `_content` and `_metadata`."""
    state = obj._pickled_state if isinstance(obj, _Placeholder) else None
    return isinstance(state, dict) and "_content" in state and "_metadata" in state


def _unwrap_omegaconf(obj: Any, seen: set[int], depth: int) -> Any:
    """Replace omegaconf container placeholders by plain dicts/lists, in place in mutable containers."""
    if _is_container_config(obj):
        return plain(obj)
    if depth > _MAX_DEPTH or id(obj) in seen or not isinstance(obj, (dict, list, tuple, argparse.Namespace, _Placeholder)):
        return obj
    seen.add(id(obj))
    if isinstance(obj, dict):
        for k, v in obj.items():
            new = _unwrap_omegaconf(v, seen, depth + 1)
            if new is not v:
                obj[k] = new
    elif isinstance(obj, list):
        obj[:] = [_unwrap_omegaconf(v, seen, depth + 1) for v in obj]
    elif isinstance(obj, tuple):
        items = [_unwrap_omegaconf(v, seen, depth + 1) for v in obj]
        if any(a is not b for a, b in zip(items, obj)) and type(obj) is tuple:
            return tuple(items)
    else:  # Namespace or placeholder: its attributes
        d = vars(obj)
        for k, v in list(d.items()):
            if k not in _RESERVED:
                d[k] = _unwrap_omegaconf(v, seen, depth + 1)
    return obj


def plain(obj: Any, _depth: int = 0, _seen: frozenset[int] = frozenset()) -> Any:
    """Recursively turn placeholders / Namespace / omegaconf remnants into plain dicts and lists
    (for reading configs): omegaconf containers become their `_content`, value nodes their
    `_val`, enum members their value, other placeholders the dict of their public state;
    tuples become lists. A reference back up the tree (omegaconf's `_parent`) becomes None."""
    if _depth > _MAX_DEPTH or id(obj) in _seen:
        return None
    if isinstance(obj, type) and issubclass(obj, _Placeholder):  # a class itself, e.g. typing.Any as a ref_type
        return obj._pickled_name
    if not isinstance(obj, (dict, list, tuple, argparse.Namespace, _Placeholder)):
        return obj
    seen, depth = _seen | {id(obj)}, _depth + 1
    if isinstance(obj, argparse.Namespace):
        obj = vars(obj)
    if isinstance(obj, dict):
        return {_key(k): plain(v, depth, seen) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v, depth, seen) for v in obj]
    state = obj._pickled_state
    if isinstance(state, dict) and "_content" in state:  # omegaconf DictConfig / ListConfig
        return plain(state["_content"], depth, seen)
    if isinstance(state, dict) and "_val" in state:  # omegaconf value node
        return plain(state["_val"], depth, seen)
    if obj._pickled_items:  # a dict subclass
        return {_key(k): plain(v, depth, seen) for k, v in obj._pickled_items.items()}
    if obj._pickled_list:  # a list subclass
        return [plain(v, depth, seen) for v in obj._pickled_list]
    if isinstance(state, dict):
        return {_key(k): plain(v, depth, seen) for k, v in state.items() if not str(k).startswith("_")}
    if state is not None:
        return plain(state, depth, seen)
    args = obj._pickled_args
    if len(args) == 1:  # an Enum member pickled as Class(value), or a wrapped scalar
        return plain(args[0], depth, seen)
    if args:
        return [plain(v, depth, seen) for v in args]
    return {}


def _key(k: Any) -> Any:
    return k if k is None or isinstance(k, (str, int, float, bool)) else str(k)


def fold_weight_norm(state: dict[str, torch.Tensor], prefix: str, model: str, where: Any) -> None:
    """Replace `prefix`'s weight-norm pair by the plain `prefix + "weight"` it stands for, in
    place, whichever way it was stored: `weight_g`/`weight_v` (fairseq, torch's old weight_norm)
    or `parametrizations.weight.original0`/`original1` (torch's parametrize). The norm of v is
    taken over every dimension where g has size 1 (all but weight_norm's `dim`), or over all of
    v for a scalar g. A lone half of a pair is an UpstreamError; no pair at all leaves `state` as it is."""
    pairs = [("weight_g", "weight_v"), ("parametrizations.weight.original0", "parametrizations.weight.original1")]
    for g_name, v_name in pairs:
        g, v = state.pop(prefix + g_name, None), state.pop(prefix + v_name, None)
        if g is not None and v is not None:
            if g.ndim == 0:
                norm = v.norm(p=2)
            else:
                norm = v.norm(p=2, dim=tuple(i for i in range(v.ndim) if i >= g.ndim or g.shape[i] == 1), keepdim=True)
            state[prefix + "weight"] = v * (g / norm)
        elif g is not None or v is not None:
            raise UpstreamError(f"{model}: {where} has only half of the weight norm of {prefix}weight ({g_name}/{v_name})")
