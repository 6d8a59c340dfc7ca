"""The shared checkpoint reader: safe unpickling of torch files pickled with classes that are not
installed (omegaconf, fairseq), omegaconf configs back as plain dicts, one-line errors, and the
weight-norm folding the upstreams share."""

from __future__ import annotations

import argparse
import collections
import copyreg
import enum
import os
import pickle
import sys
import types
import typing
from pathlib import Path

import numpy as np
import pytest
import torch

from avsuperb.extract.upstreams import UpstreamError, checkpoint
from avsuperb.extract.upstreams.checkpoint import fold_weight_norm, one_line, plain, read_checkpoint


class _Gone:
    """Registers classes under module names that exist only while saving, as if the package that
    pickled them (omegaconf, fairseq) were not installed when the checkpoint is read."""

    def __init__(self, **classes: type) -> None:
        self.classes = classes  # "module.Name" -> class

    def __enter__(self) -> _Gone:
        self.mp = pytest.MonkeyPatch()
        for full, cls in self.classes.items():
            module, name = full.rsplit(".", 1)
            parts = module.split(".")
            for i in range(1, len(parts) + 1):
                if ".".join(parts[:i]) not in sys.modules:
                    self.mp.setitem(sys.modules, ".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
            setattr(sys.modules[module], name, cls)
            cls.__module__, cls.__qualname__, cls.__name__ = module, name, name
        return self

    def __exit__(self, *exc: object) -> None:
        self.mp.undo()


class Metadata:
    def __init__(self) -> None:
        self.ref_type, self.object_type, self.optional, self.key = typing.Any, dict, True, None


class DictConfig:
    """Pickled as omegaconf's: `__getstate__` gives `_metadata`, `_parent` (a back-reference) and `_content`."""

    def __init__(self, content: dict, parent: object = None) -> None:
        self.__dict__["_metadata"] = Metadata()
        self.__dict__["_parent"] = parent
        self.__dict__["_content"] = {k: _wrap(v, self) for k, v in content.items()}

    def __getstate__(self) -> dict:
        return dict(self.__dict__)


class ListConfig(DictConfig):
    def __init__(self, content: list, parent: object = None) -> None:
        self.__dict__["_metadata"] = Metadata()
        self.__dict__["_parent"] = parent
        self.__dict__["_content"] = [_wrap(v, self) for v in content]


class AnyNode:
    def __init__(self, value: object, parent: object) -> None:
        self.__dict__.update({"_val": value, "_metadata": Metadata(), "_parent": parent})

    def __getstate__(self) -> dict:
        return dict(self.__dict__)


class ChoiceEnum(enum.Enum):
    gelu = "gelu"
    relu = "relu"


def _wrap(value: object, parent: object) -> object:
    if isinstance(value, dict):
        return DictConfig(value, parent)
    if isinstance(value, list):
        return ListConfig(value, parent)
    return AnyNode(ChoiceEnum(value) if value in ("gelu", "relu") else value, parent)


FAKE_OMEGACONF = {
    "omegaconf.base.Metadata": Metadata,
    "omegaconf.dictconfig.DictConfig": DictConfig,
    "omegaconf.listconfig.ListConfig": ListConfig,
    "omegaconf.nodes.AnyNode": AnyNode,
    "fairseq.dataclass.constants.ChoiceEnum": ChoiceEnum,
}


class Dictionary:
    """Like fairseq's Dictionary: a plain object with attributes."""

    def __init__(self, symbols: list[str]) -> None:
        self.symbols, self.count = symbols, [1] * len(symbols)


class Meters(collections.OrderedDict):
    """A dict subclass (like fairseq's MetersDict): pickled with SETITEMS."""


class Slotted:
    __slots__ = ("a", "b")

    def __init__(self) -> None:
        self.a, self.b = 1, "two"


CFG = {"model": {"_name": "hubert", "activation_fn": "gelu", "encoder_layers": 2, "dims": [4, 8]}, "task": {"normalize": True}}


def save(tmp_path: Path, payload: object, name: str = "ckpt.pt", **kwargs: object) -> Path:
    path = tmp_path / name
    torch.save(payload, path, **kwargs)
    return path


# --------------------------------------------------------------------------- what comes back


def test_tensors_containers_numpy_and_namespace_come_back(tmp_path):
    state = collections.OrderedDict(w=torch.randn(3, 4), idx=torch.arange(5), half=torch.ones(2, dtype=torch.float16))
    state._metadata = collections.OrderedDict({"": {"version": 1}})  # type: ignore[attr-defined]
    base = torch.arange(10.0)
    payload = {
        "model": state,
        "param": torch.nn.Parameter(torch.ones(2)),
        "views": (base, base[2:5]),
        "args": argparse.Namespace(lr=0.1, arch="hubert"),
        "extra": {"best": np.float64(0.25), "arr": np.arange(6, dtype=np.int32).reshape(2, 3), "s": {1, 2}, "f": frozenset("a")},
    }
    obj = read_checkpoint(save(tmp_path, payload), "m")
    assert isinstance(obj["model"], collections.OrderedDict) and list(obj["model"]) == ["w", "idx", "half"]
    assert obj["model"]._metadata == {"": {"version": 1}}
    for k, v in state.items():
        assert torch.equal(obj["model"][k], v) and obj["model"][k].dtype == v.dtype
    assert isinstance(obj["param"], torch.nn.Parameter)
    whole, view = obj["views"]
    assert view.untyped_storage().data_ptr() == whole.untyped_storage().data_ptr() and torch.equal(view, base[2:5])
    assert obj["args"] == argparse.Namespace(lr=0.1, arch="hubert")
    assert obj["extra"]["best"] == 0.25 and isinstance(obj["extra"]["best"], np.float64)
    np.testing.assert_array_equal(obj["extra"]["arr"], np.arange(6, dtype=np.int32).reshape(2, 3))
    assert obj["extra"]["s"] == {1, 2} and obj["extra"]["f"] == frozenset("a")


def test_legacy_format_and_python2_module_names(tmp_path):
    payload = {"args": argparse.Namespace(arch="hubert"), "model": {"w": torch.randn(2, 2)}}
    path = save(tmp_path, payload, _use_new_zipfile_serialization=False)
    obj = read_checkpoint(path, "m")
    assert obj["args"].arch == "hubert" and torch.equal(obj["model"]["w"], payload["model"]["w"])
    # protocol-2 pickles (torch.save's default) name Python 2's modules: mapped, then allow-listed as usual
    assert read_checkpoint(save(tmp_path, {"ok": {1}}, name="py2.pt", pickle_protocol=2), "m") == {"ok": {1}}
    find_class = checkpoint._SafeUnpickler.find_class
    assert find_class(None, "__builtin__", "set") is set  # type: ignore[arg-type]
    assert find_class(None, "copy_reg", "_reconstructor") is copyreg._reconstructor  # type: ignore[arg-type]


def test_omegaconf_config_comes_back_as_plain_dicts_without_omegaconf(tmp_path):
    with _Gone(**FAKE_OMEGACONF):
        cfg = DictConfig(CFG)
        path = save(tmp_path, {"cfg": cfg, "nested": [{"cfg": cfg}], "model": {"w": torch.ones(1)}})
    assert not any(m in sys.modules for m in ("omegaconf", "omegaconf.dictconfig", "fairseq"))
    obj = read_checkpoint(path, "m")
    assert obj["cfg"] == CFG  # enum member -> its value, ListConfig -> list, parents dropped
    assert obj["nested"][0]["cfg"] == CFG
    assert not any(m in sys.modules for m in ("omegaconf", "omegaconf.dictconfig", "fairseq"))  # nothing imported


def test_other_classes_become_inert_placeholders_with_their_state(tmp_path):
    with _Gone(**{"fairseq_gone.data.Dictionary": Dictionary, "fairseq_gone.meters.Meters": Meters, "gone.Slotted": Slotted}):
        meters = Meters(loss=1.5)
        payload = {"dict": Dictionary(["<s>", "a"]), "meters": meters, "slotted": Slotted(), "cls": Dictionary}
        path = save(tmp_path, payload)
    obj = read_checkpoint(path, "m")
    d = obj["dict"]
    assert isinstance(d, checkpoint._Placeholder) and d._pickled_name == "fairseq_gone.data.Dictionary"
    assert d.symbols == ["<s>", "a"] and "placeholder for fairseq_gone.data.Dictionary" in repr(d)
    assert plain(d) == {"symbols": ["<s>", "a"], "count": [1, 1]}
    assert plain(obj["meters"]) == {"loss": 1.5}
    assert plain(obj["slotted"]) == {"a": 1, "b": "two"}
    assert plain(obj["cls"]) == "fairseq_gone.data.Dictionary"


def test_pickled_calls_stay_inert(tmp_path, capsys):
    """A pickled call to a function that is not allow-listed comes back as a placeholder, not run."""
    marker = tmp_path / "ran"

    class Boom:
        def __reduce__(self):
            return (print, ("SHOULD NOT RUN",))

    class Shell:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = save(tmp_path, {"model": {}, "cfg": None, "x": Boom(), "y": Shell()}, pickle_module=pickle)
    obj = read_checkpoint(path, "m")
    assert isinstance(obj["x"], checkpoint._Placeholder) and obj["x"]._pickled_name == "builtins.print"
    assert obj["x"]._pickled_args == ("SHOULD NOT RUN",)
    assert obj["y"]._pickled_name in ("posix.system", "os.system", "nt.system")
    assert not marker.exists() and "SHOULD NOT RUN" not in capsys.readouterr().out


# --------------------------------------------------------------------------- errors


def test_unreadable_files_are_one_line_errors_naming_the_model(tmp_path):
    good = save(tmp_path, {"model": {"w": torch.randn(64, 64)}})
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    noise = tmp_path / "noise.pt"
    noise.write_bytes(np.random.default_rng(0).bytes(5000))
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    cases = {
        truncated: "cannot read .* as a PyTorch checkpoint",
        noise: "cannot read .* as a PyTorch checkpoint",
        empty: "cannot read .* as a PyTorch checkpoint",
        tmp_path / "absent.pt": "does not exist",
        tmp_path: "is not a file",
    }
    for path, message in cases.items():
        with pytest.raises(UpstreamError, match=message) as err:
            read_checkpoint(path, "mymodel", expected="a released mymodel.pt")
        text = str(err.value)
        assert text.startswith("mymodel: ") and "\n" not in text and text.endswith("; expected a released mymodel.pt"), text
    with pytest.raises(UpstreamError) as err:
        read_checkpoint(tmp_path / "absent.pt", "other")
    assert str(err.value) == f"other: checkpoint {tmp_path / 'absent.pt'} does not exist"


def test_one_line():
    assert one_line(RuntimeError("first\nsecond")) == "RuntimeError: first"
    assert one_line(EOFError()) == "EOFError"
    assert len(one_line(ValueError("x" * 500))) == len("ValueError: ") + 200


# --------------------------------------------------------------------------- plain


def test_plain_on_configs():
    ns = argparse.Namespace(a=(1, 2), b={"c": argparse.Namespace(d=None)})
    assert plain(ns) == {"a": [1, 2], "b": {"c": {"d": None}}}
    loop: dict = {"x": 1}
    loop["self"] = loop
    assert plain(loop) == {"x": 1, "self": None}
    enum_member = checkpoint._placeholder_class("fairseq.dataclass.constants.ChoiceEnum")("gelu")
    assert plain(enum_member) == "gelu"
    node = checkpoint._placeholder_class("omegaconf.nodes.AnyNode")()
    node.__setstate__({"_val": 3, "_metadata": None, "_parent": None})
    assert plain(node) == 3
    assert plain(checkpoint._placeholder_class("x.Empty")()) == {}
    t = torch.ones(2)
    assert plain({"t": t})["t"] is t


# --------------------------------------------------------------------------- weight norm


def test_fold_weight_norm_g_v_pair_equals_torch():
    conv = torch.nn.utils.parametrizations.weight_norm(torch.nn.Conv1d(8, 8, 5, groups=2), dim=2)  # fairseq's pos_conv
    names = {"parametrizations.weight.original0": "weight_g", "parametrizations.weight.original1": "weight_v"}
    state = {f"pos.{names.get(k, k)}": v.detach().clone() for k, v in conv.state_dict().items()}
    assert "pos.weight_g" in state
    fold_weight_norm(state, "pos.", "m", "here")
    assert set(state) == {"pos.weight", "pos.bias"}
    torch.testing.assert_close(state["pos.weight"], conv.weight.detach())


def test_fold_weight_norm_parametrizations_equals_torch():
    for dim in (0, None):
        lin = torch.nn.utils.parametrizations.weight_norm(torch.nn.Linear(6, 4), dim=dim)
        state = {k: v.detach().clone() for k, v in lin.state_dict().items()}
        fold_weight_norm(state, "", "m", "here")
        assert set(state) == {"weight", "bias"}
        torch.testing.assert_close(state["weight"], lin.weight.detach())


def test_fold_weight_norm_without_a_pair_or_with_half():
    state = {"a.weight": torch.ones(2)}
    fold_weight_norm(state, "a.", "m", "here")
    assert list(state) == ["a.weight"]
    with pytest.raises(UpstreamError, match=r"^m: here has only half of the weight norm of a\.weight \(weight_g/weight_v\)$"):
        fold_weight_norm({"a.weight_g": torch.ones(1, 1, 3)}, "a.", "m", "here")
