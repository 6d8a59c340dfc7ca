"""HuBERT (Base; Large by checkpoint): the transformer's input plus every layer's output.

The weights come from a local `--checkpoint`, in any of the three released forms, and are mapped
onto torchaudio's wav2vec2/HuBERT architecture; layer count and sizes are read from the checkpoint:

- fairseq (`hubert_base_ls960.pt`, pre-trained or fine-tuned `w2v_encoder.w2v_model.*`), read
  without fairseq or omegaconf installed (`checkpoint.read_checkpoint`: pickled objects of other
  classes become inert placeholders);
- torchaudio's bundle state dict (`hubert_fairseq_base_ls960.pth`), which carries no config;
- a Hugging Face model directory (`config.json` + `model.safetensors` or `pytorch_model.bin`).

Layers exposed (s3prl's convention, and Hugging Face's `hidden_states` up to transformers 4.x):
the transformer input after the positional convolution (and, for the post-LN Base arch, the
encoder layer norm), then each layer's output. For pre-LN ("Large", `layer_norm_first`) models the
encoder's final layer norm is applied to the last layer, as fairseq's encoder output, s3prl and
transformers 4.x do; transformers 5.x leaves `hidden_states[-1]` un-normed and puts the normed
tensor in `last_hidden_state` only.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import json
import logging
import math
import re
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrize import is_parametrized, remove_parametrizations
from torchaudio.models import Wav2Vec2Model, wav2vec2_model

from avsuperb.extract.upstreams.base import TrackInfo, Upstream, UpstreamError, register
from avsuperb.extract.upstreams.checkpoint import fold_weight_norm, one_line, plain
from avsuperb.extract.upstreams.checkpoint import read_checkpoint as read_torch_file

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
ACCEPTED = (
    "a fairseq checkpoint (https://dl.fbaipublicfiles.com/hubert/hubert_base_ls960.pt), torchaudio's "
    "hubert_fairseq_base_ls960.pth state dict, or a Hugging Face model directory such as a download of "
    "facebook/hubert-base-ls960 (config.json + model.safetensors or pytorch_model.bin)"
)
HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
# What a config-less checkpoint cannot tell: heads by width (HuBERT Base, Large, X-Large), strides by kernel.
DEFAULT_HEADS = {768: 12, 1024: 16, 1280: 16}
DEFAULT_STRIDE = {10: 5, 3: 2, 2: 2}

POS_CONV = "encoder.transformer.pos_conv_embed.conv."
_LAYER = r"encoder\.layers\.(\d+)\."
_TA_LAYER = r"encoder.transformer.layers.\1."
# Per naming: (regex on the key without its prefix, torchaudio name). Keys matched by none, and not
# ignorable, are an error: they mean an architecture this module does not implement.
RULES: dict[str, list[tuple[str, str]]] = {
    "fairseq": [
        (r"feature_extractor\.conv_layers\.(\d+)\.0\.(weight|bias)", r"feature_extractor.conv_layers.\1.conv.\2"),
        (r"feature_extractor\.conv_layers\.0\.2\.(weight|bias)", r"feature_extractor.conv_layers.0.layer_norm.\1"),
        (r"feature_extractor\.conv_layers\.(\d+)\.2\.1\.(weight|bias)", r"feature_extractor.conv_layers.\1.layer_norm.\2"),
        (r"layer_norm\.(weight|bias)", r"encoder.feature_projection.layer_norm.\1"),
        (r"post_extract_proj\.(weight|bias)", r"encoder.feature_projection.projection.\1"),
        (r"encoder\.pos_conv\.0\.(.+)", POS_CONV + r"\1"),
        (r"encoder\.layer_norm\.(weight|bias)", r"encoder.transformer.layer_norm.\1"),
        (_LAYER + r"self_attn\.(q|k|v|out)_proj\.(weight|bias)", _TA_LAYER + r"attention.\2_proj.\3"),
        (_LAYER + r"self_attn_layer_norm\.(weight|bias)", _TA_LAYER + r"layer_norm.\2"),
        (_LAYER + r"fc1\.(weight|bias)", _TA_LAYER + r"feed_forward.intermediate_dense.\2"),
        (_LAYER + r"fc2\.(weight|bias)", _TA_LAYER + r"feed_forward.output_dense.\2"),
        (_LAYER + r"final_layer_norm\.(weight|bias)", _TA_LAYER + r"final_layer_norm.\2"),
    ],
    "huggingface": [
        (r"feature_extractor\.conv_layers\.(\d+)\.(conv|layer_norm)\.(weight|bias)", r"feature_extractor.conv_layers.\1.\2.\3"),
        (r"feature_projection\.(layer_norm|projection)\.(weight|bias)", r"encoder.feature_projection.\1.\2"),
        (r"encoder\.pos_conv_embed\.conv\.(.+)", POS_CONV + r"\1"),
        (r"encoder\.layer_norm\.(weight|bias)", r"encoder.transformer.layer_norm.\1"),
        (
            _LAYER + r"(attention\.(?:q|k|v|out)_proj|layer_norm|final_layer_norm|feed_forward\.(?:intermediate|output)_dense)\.(weight|bias)",
            _TA_LAYER + r"\2.\3",
        ),
    ],
    "torchaudio": [(r"((?:feature_extractor|encoder)\..+)", r"\1")],
}
# Each naming is recognised by its positional-convolution bias (every HuBERT has one); whatever
# precedes it in the key is the wrapper's prefix (`w2v_encoder.w2v_model.`, `hubert.`, `wav2vec2.`).
MARKERS = {
    "torchaudio": "encoder.transformer.pos_conv_embed.conv.bias",
    "huggingface": "encoder.pos_conv_embed.conv.bias",
    "fairseq": "encoder.pos_conv.0.bias",
}
# Pre-training heads and masking embeddings: present in released checkpoints, unused for features.
IGNORED = re.compile(r"mask_emb|label_embs_concat|final_proj\..*|target_glu\..*|masked_spec_embed|layer_weights")
# Fine-tuning heads (fairseq CTC projection, HF lm_head/classifier, torchaudio aux).
HEADS = re.compile(r"(w2v_encoder\.)?proj\..*|lm_head\..*|projector\..*|classifier\..*|aux\..*|decoder\..*")


@dataclass(frozen=True)
class Arch:
    """Everything about the network that changes its output."""

    conv_layers: tuple[tuple[int, int, int], ...]  # (channels, kernel, stride) per feature-extractor conv
    conv_bias: bool
    extractor_mode: str  # "group_norm" (Base) or "layer_norm" (Large)
    embed_dim: int
    ffn_dim: int
    num_layers: int
    num_heads: int
    pos_conv_kernel: int
    pos_conv_groups: int
    layer_norm_first: bool  # pre-LN transformer layers (Large); post-LN for Base
    layer_norm_eps: float = 1e-5
    feature_layer_norm: bool = True

    @property
    def hop(self) -> int:
        return math.prod(s for _, _, s in self.conv_layers)

    @property
    def receptive_field(self) -> int:
        rf = 1
        for _, k, s in reversed(self.conv_layers):
            rf = (rf - 1) * s + k
        return rf


@dataclass
class Hints:
    """What a checkpoint's config says beyond its tensor shapes; None where it says nothing."""

    strides: list[int] | None = None
    num_heads: int | None = None
    layer_norm_first: bool | None = None
    extractor_mode: str | None = None  # "group_norm" or "layer_norm"
    normalize: bool | None = None
    layer_norm_eps: float = 1e-5
    feature_layer_norm: bool = True
    declared: dict[str, int] = field(default_factory=dict)  # sizes the config states, checked against the weights
    finetuned: bool = False


@dataclass
class Checkpoint:
    source: str  # "fairseq", "torchaudio" or "huggingface"
    state: dict[str, torch.Tensor]  # torchaudio naming; the positional conv weight with weight norm folded in
    hints: Hints
    finetuned: bool
    weights_file: Path


# ---------------------------------------------------------------------------------------------
# The three released forms, all turned into torchaudio naming


def read_checkpoint(path: Path) -> Checkpoint:
    path = Path(path).expanduser()
    if not path.exists():
        raise UpstreamError(f"hubert: checkpoint {path} does not exist; expected {ACCEPTED}")
    if path.is_file() and (path.name in HF_WEIGHTS or path.name == "config.json") and (path.parent / "config.json").is_file():
        path = path.parent
    if path.is_dir():
        return _read_huggingface(path)
    obj = read_torch_file(path, "hubert", expected=ACCEPTED)
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):  # fairseq: {"cfg" or "args", "model", ...}
        hints = _fairseq_hints(obj)
        naming, state, finetuned = _canonical(obj["model"], path)
        return Checkpoint("fairseq", state, hints, finetuned or hints.finetuned, path)
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        naming, state, finetuned = _canonical(obj, path)
        return Checkpoint(naming, state, Hints(), finetuned, path)
    kind = type(obj).__name__ if not isinstance(obj, dict) else f"dict with keys {', '.join(map(str, list(obj)[:5]))}"
    raise UpstreamError(f"hubert: {path} holds a {kind}, not a HuBERT state dict or fairseq checkpoint; expected {ACCEPTED}")


def _read_huggingface(root: Path) -> Checkpoint:
    cfg_file = root / "config.json"
    if not cfg_file.is_file():
        raise UpstreamError(f"hubert: {root} is a directory without config.json; expected {ACCEPTED}")
    try:
        cfg = json.loads(cfg_file.read_text())
    except (OSError, ValueError) as err:
        raise UpstreamError(f"hubert: cannot read {cfg_file} ({one_line(err)})") from None
    if not isinstance(cfg, dict):
        raise UpstreamError(f"hubert: {cfg_file} is not a JSON object")
    model_type = cfg.get("model_type", "hubert")
    if model_type != "hubert":
        raise UpstreamError(f"hubert: {cfg_file} describes a {model_type!r} model, not 'hubert'")
    for key, want in (("hidden_act", "gelu"), ("feat_extract_activation", "gelu"), ("conv_pos_batch_norm", False)):
        if cfg.get(key, want) != want:
            raise UpstreamError(f"hubert: {cfg_file} sets {key}={cfg[key]!r}; only {want!r} is supported")
    weights = next((root / n for n in HF_WEIGHTS if (root / n).is_file()), None)
    if weights is None:
        raise UpstreamError(f"hubert: {root} has config.json but no {' or '.join(HF_WEIGHTS)} (sharded checkpoints are not supported)")
    if weights.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file

            raw = load_file(str(weights), device="cpu")
        except Exception as err:
            raise UpstreamError(f"hubert: cannot read {weights} ({one_line(err)}); expected a safetensors file") from None
    else:
        raw = read_torch_file(weights, "hubert", expected=ACCEPTED)
        if not isinstance(raw, dict) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
            raise UpstreamError(f"hubert: {weights} is not a state dict of tensors")

    hints = Hints(
        strides=[int(s) for s in cfg["conv_stride"]] if "conv_stride" in cfg else None,
        num_heads=int(cfg["num_attention_heads"]) if "num_attention_heads" in cfg else None,
        layer_norm_first=bool(cfg.get("do_stable_layer_norm", False)),
        extractor_mode=_extractor_mode(cfg.get("feat_extract_norm"), {"group": "group_norm", "layer": "layer_norm"}, cfg_file),
        layer_norm_eps=float(cfg.get("layer_norm_eps", 1e-5)),
        feature_layer_norm=bool(cfg.get("feat_proj_layer_norm", True)),
        declared={k: int(cfg[c]) for k, c in (("num_layers", "num_hidden_layers"), ("embed_dim", "hidden_size"), ("ffn_dim", "intermediate_size")) if c in cfg},
        finetuned=any("For" in a for a in cfg.get("architectures") or []),
    )
    pre = root / "preprocessor_config.json"
    if pre.is_file():
        try:
            hints.normalize = bool(json.loads(pre.read_text()).get("do_normalize"))
        except (OSError, ValueError, AttributeError) as err:
            raise UpstreamError(f"hubert: cannot read {pre} ({one_line(err)})") from None
    naming, state, finetuned = _canonical(raw, weights)
    if naming != "huggingface":
        raise UpstreamError(f"hubert: {weights} uses {naming} parameter names, not Hugging Face's; give the file itself as --checkpoint")
    return Checkpoint("huggingface", state, hints, finetuned or hints.finetuned, weights)


def _fairseq_hints(ckpt: dict[str, Any]) -> Hints:
    cfg = plain(ckpt.get("cfg")) if ckpt.get("cfg") is not None else None
    if isinstance(cfg, dict) and isinstance(cfg.get("model"), dict):
        model, task = cfg["model"], cfg.get("task") or {}
    elif ckpt.get("args") is not None:  # legacy argparse Namespace: one flat namespace
        model = task = plain(ckpt["args"])
    else:
        log.warning("hubert: the fairseq checkpoint has no readable config; architecture inferred from the weights")
        return Hints()
    if not isinstance(model, dict) or not isinstance(task, dict):
        return Hints()
    name = str(model.get("_name") or model.get("arch") or "hubert")
    finetuned = False
    outer_normalize = task.get("normalize", model.get("normalize"))
    inner = plain(model.get("w2v_args"))
    if isinstance(inner, dict) and inner:  # fine-tuned: the encoder's config is the pre-training one
        finetuned = True
        if isinstance(inner.get("model"), dict):
            model, task = inner["model"], inner.get("task") or {}
        else:
            model = task = inner
        name = str(model.get("_name") or model.get("arch") or name)
    if "hubert" not in name:
        raise UpstreamError(f"hubert: the fairseq checkpoint is a {name!r} model, not HuBERT")
    for key, want in (("activation_fn", "gelu"), ("layer_type", "transformer"), ("pos_conv_depth", 1)):
        if model.get(key, want) != want:
            raise UpstreamError(f"hubert: the fairseq checkpoint sets {key}={model[key]!r}; only {want!r} is supported")
    spec = model.get("conv_feature_layers")
    strides = [s for _, _, s in _conv_spec(spec)] if spec else None
    normalize = outer_normalize if outer_normalize is not None else task.get("normalize")
    return Hints(
        strides=strides,
        num_heads=int(model["encoder_attention_heads"]) if "encoder_attention_heads" in model else None,
        layer_norm_first=bool(model["layer_norm_first"]) if "layer_norm_first" in model else None,
        extractor_mode=_extractor_mode(model.get("extractor_mode"), {"default": "group_norm", "layer_norm": "layer_norm"}, "the fairseq config"),
        normalize=bool(normalize) if normalize is not None else None,
        declared={k: int(model[c]) for k, c in (("num_layers", "encoder_layers"), ("embed_dim", "encoder_embed_dim"), ("ffn_dim", "encoder_ffn_embed_dim")) if c in model},
        finetuned=finetuned or name in ("hubert_ctc", "hubert_seq2seq"),
    )


def _extractor_mode(value: Any, names: dict[str, str], where: Any) -> str | None:
    if value is None:
        return None
    if value not in names:
        raise UpstreamError(f"hubert: {where} has feature-extractor norm {value!r}; expected one of {', '.join(names)}")
    return names[value]


def _conv_spec(spec: Any) -> list[tuple[int, int, int]]:
    """fairseq's `conv_feature_layers` ("[(512,10,5)] + [(512,3,2)] * 4 + ..."), evaluated without eval."""

    def value(node: ast.AST) -> Any:
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            items = [value(e) for e in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
            a, b = value(node.left), value(node.right)
            return a + b if isinstance(node.op, ast.Add) else a * b
        raise ValueError(ast.dump(node))

    try:
        layers = value(ast.parse(spec, mode="eval").body) if isinstance(spec, str) else spec
        return [(int(c), int(k), int(s)) for c, k, s in layers]
    except (SyntaxError, ValueError, TypeError) as err:
        raise UpstreamError(f"hubert: cannot parse conv_feature_layers {spec!r} in the fairseq config ({one_line(err)})") from None


def _canonical(raw: dict[str, Any], where: Path) -> tuple[str, dict[str, torch.Tensor], bool]:
    """(naming, state dict in torchaudio naming, has a fine-tuning head) from any of the three namings."""
    naming, prefix = _detect(raw, where)
    rules = [(re.compile(p), r) for p, r in RULES[naming]]
    state: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    finetuned = "w2v_model" in prefix  # fairseq's fine-tuned wrappers: w2v_encoder.w2v_model. / encoder.w2v_model.
    for key, value in raw.items():
        inside = key.startswith(prefix)
        name = key[len(prefix) :] if inside else key
        if HEADS.fullmatch(name) or HEADS.fullmatch(key):
            finetuned = True
            continue
        if not inside or IGNORED.fullmatch(name):
            continue
        target = next((rx.sub(r, name) for rx, r in rules if rx.fullmatch(name)), None)
        if target is None:
            unknown.append(key)
        elif isinstance(value, torch.Tensor):
            state[target] = value.float() if value.is_floating_point() else value
    if unknown:
        more = f" and {len(unknown) - 3} more" if len(unknown) > 3 else ""
        raise UpstreamError(f"hubert: {where} has parameters a HuBERT encoder does not have ({', '.join(unknown[:3])}{more})")
    fold_weight_norm(state, POS_CONV, "hubert", where)  # the positional conv's weight norm (dim 2)
    return naming, state, finetuned


def _detect(raw: dict[str, Any], where: Path) -> tuple[str, str]:
    for naming, marker in MARKERS.items():
        for key in raw:
            if isinstance(key, str) and key.endswith(marker) and (len(key) == len(marker) or key[-len(marker) - 1] == "."):
                return naming, key[: -len(marker)]
    sample = ", ".join(map(str, list(raw)[:3]))
    raise UpstreamError(
        f"hubert: {where} is not a HuBERT checkpoint: none of its {len(raw)} tensors ({sample}, ...) is a HuBERT "
        f"positional convolution; expected {ACCEPTED}"
    )


# ---------------------------------------------------------------------------------------------
# Architecture from shapes (+ what the config says), then the torchaudio model


def infer_arch(ckpt: Checkpoint) -> Arch:
    s, h, where = ckpt.state, ckpt.hints, ckpt.weights_file

    def need(key: str) -> torch.Tensor:
        if key not in s:
            raise UpstreamError(f"hubert: {where} lacks {key} (torchaudio naming); the checkpoint is incomplete or not HuBERT")
        return s[key]

    convs = []
    while f"feature_extractor.conv_layers.{len(convs)}.conv.weight" in s:
        convs.append(s[f"feature_extractor.conv_layers.{len(convs)}.conv.weight"])
    if not convs:
        need("feature_extractor.conv_layers.0.conv.weight")
    kernels = [int(w.shape[-1]) for w in convs]
    if h.strides is not None:
        if len(h.strides) != len(convs):
            raise UpstreamError(f"hubert: the config lists {len(h.strides)} feature-extractor convolutions but {where} has {len(convs)}")
        strides = h.strides
    elif all(k in DEFAULT_STRIDE for k in kernels):
        strides = [DEFAULT_STRIDE[k] for k in kernels]
    else:
        raise UpstreamError(f"hubert: {where} has no config and conv kernels {kernels} whose strides cannot be inferred")
    normed = [i for i in range(len(convs)) if f"feature_extractor.conv_layers.{i}.layer_norm.weight" in s]
    if h.extractor_mode is not None:
        mode = h.extractor_mode
    elif normed == [0]:
        mode = "group_norm"
    elif len(normed) == len(convs):
        mode = "layer_norm"
    else:
        raise UpstreamError(f"hubert: {where} has normalisation in feature-extractor convolutions {normed}; not a HuBERT checkpoint")

    proj = need("encoder.feature_projection.projection.weight")
    pos = need(POS_CONV + "weight")
    embed_dim = int(proj.shape[0])
    num_layers = 0
    while f"encoder.transformer.layers.{num_layers}.attention.q_proj.weight" in s:
        num_layers += 1
    if num_layers == 0:
        need("encoder.transformer.layers.0.attention.q_proj.weight")
    ffn_dim = int(need("encoder.transformer.layers.0.feed_forward.intermediate_dense.weight").shape[0])
    heads = h.num_heads or DEFAULT_HEADS.get(embed_dim) or (embed_dim // 64 if embed_dim % 64 == 0 else None)
    if not heads or embed_dim % heads:
        raise UpstreamError(f"hubert: cannot split {embed_dim} dims into {heads} attention heads")
    found = {"num_layers": num_layers, "embed_dim": embed_dim, "ffn_dim": ffn_dim}
    for k, v in h.declared.items():
        if found[k] != v:
            raise UpstreamError(f"hubert: the config says {k}={v} but the weights in {where} have {found[k]}")
    return Arch(
        conv_layers=tuple((int(w.shape[0]), k, st) for w, k, st in zip(convs, kernels, strides)),
        conv_bias="feature_extractor.conv_layers.0.conv.bias" in s,
        extractor_mode=mode,
        embed_dim=embed_dim,
        ffn_dim=ffn_dim,
        num_layers=num_layers,
        num_heads=int(heads),
        pos_conv_kernel=int(pos.shape[-1]),
        pos_conv_groups=embed_dim // int(pos.shape[1]),
        # Without a config (torchaudio bundles), the released pairs: group norm + post-LN (Base), layer norm + pre-LN (Large).
        layer_norm_first=h.layer_norm_first if h.layer_norm_first is not None else mode == "layer_norm",
        layer_norm_eps=h.layer_norm_eps,
        feature_layer_norm=h.feature_layer_norm,
    )


_INIT_LOCK = threading.Lock()


@contextlib.contextmanager
def _skipped_init() -> Iterator[None]:
    """torch.nn.init's fillers do nothing meanwhile: the weights of a model built here are replaced by a
    checkpoint's at once. (Building on the meta device instead costs a 1 s import of torch._dynamo that
    torchaudio's weight norm triggers there: more than random init takes for HuBERT Base, 0.4 s.)"""
    names = ("uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "kaiming_uniform_", "kaiming_normal_",
             "xavier_uniform_", "xavier_normal_")
    with _INIT_LOCK:  # two builds at once (threads of one Dask worker) must not save each other's no-ops
        saved = {n: getattr(nn.init, n) for n in names}
        for n in names:
            setattr(nn.init, n, lambda tensor, *args, **kwargs: tensor)
        try:
            yield
        finally:
            for n, f in saved.items():
                setattr(nn.init, n, f)


def build_model(arch: Arch, state: dict[str, torch.Tensor], where: Path) -> Wav2Vec2Model:
    with _skipped_init(), torch.no_grad():
        model = _empty_model(arch)
    try:
        model.load_state_dict({k: v.contiguous() for k, v in state.items()}, strict=True, assign=True)
    except RuntimeError as err:
        expected = model.state_dict()
        missing = [k for k in expected if k not in state]
        extra = [k for k in state if k not in expected]
        shapes = [k for k in expected if k in state and expected[k].shape != state[k].shape]
        detail = "; ".join(
            f"{label} {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
            for label, keys in (("missing", missing), ("unexpected", extra), ("wrong shape", shapes))
            if keys
        ) or one_line(err)
        raise UpstreamError(f"hubert: {where} does not fit a HuBERT of its own inferred shape ({detail})") from None
    return model.eval().requires_grad_(False)


def _empty_model(arch: Arch) -> Wav2Vec2Model:
    model = wav2vec2_model(
        extractor_mode=arch.extractor_mode,
        extractor_conv_layer_config=list(arch.conv_layers),
        extractor_conv_bias=arch.conv_bias,
        encoder_embed_dim=arch.embed_dim,
        encoder_projection_dropout=0.0,
        encoder_pos_conv_kernel=arch.pos_conv_kernel,
        encoder_pos_conv_groups=arch.pos_conv_groups,
        encoder_num_layers=arch.num_layers,
        encoder_num_heads=arch.num_heads,
        encoder_attention_dropout=0.0,
        encoder_ff_interm_features=arch.ffn_dim,
        encoder_ff_interm_dropout=0.0,
        encoder_dropout=0.0,
        encoder_layer_norm_first=arch.layer_norm_first,
        encoder_layer_drop=0.0,
        aux_num_out=None,
    )
    conv = model.encoder.transformer.pos_conv_embed.conv
    if is_parametrized(conv, "weight"):  # weight norm is folded into the loaded weight
        remove_parametrizations(conv, "weight", leave_parametrized=True)
    if not arch.feature_layer_norm:
        model.encoder.feature_projection.layer_norm = nn.Identity()
    for m in model.modules():
        if isinstance(m, nn.LayerNorm):
            m.eps = arch.layer_norm_eps
    return model


# ---------------------------------------------------------------------------------------------
# Forward


def _masked_group_norm(x: torch.Tensor, lengths: torch.Tensor, norm: nn.GroupNorm) -> torch.Tensor:
    """Per-channel GroupNorm over each clip's own frames only, so padding never enters the statistics."""
    valid = (torch.arange(x.shape[-1], device=x.device)[None, :] < lengths[:, None]).unsqueeze(1).to(x.dtype)
    n = lengths.clamp(min=1).to(x.dtype).view(-1, 1, 1)
    mean = (x * valid).sum(-1, keepdim=True) / n
    var = ((x - mean) * valid).pow(2).sum(-1, keepdim=True) / n
    y = (x - mean) * torch.rsqrt(var + norm.eps)
    return y * norm.weight.view(1, -1, 1) + norm.bias.view(1, -1, 1)


def hidden_states(model: Wav2Vec2Model, arch: Arch, waves: list[torch.Tensor]) -> list[torch.Tensor]:
    """[T_i, L+1, D] per clip; a clip's result does not depend on the other clips in the call."""
    device = waves[0].device
    lengths = torch.tensor([w.numel() for w in waves], device=device)
    x = nn.utils.rnn.pad_sequence(waves, batch_first=True).unsqueeze(1)  # [B, 1, S]
    for block in model.feature_extractor.conv_layers:
        x = block.conv(x)
        lengths = torch.div(lengths - block.kernel_size, block.stride, rounding_mode="floor") + 1
        if isinstance(block.layer_norm, nn.GroupNorm):
            x = _masked_group_norm(x, lengths, block.layer_norm)
        elif block.layer_norm is not None:
            x = block.layer_norm(x)
        x = F.gelu(x)
    x = x[..., : int(lengths.max())].transpose(1, 2)  # [B, T, C]; frames past a clip's length are padding
    frames = [int(n) for n in lengths]

    encoder = model.encoder
    x = encoder.feature_projection(x)
    valid = torch.arange(x.shape[1], device=device)[None, :] < lengths[:, None]  # [B, T]
    padded = not bool(valid.all())
    if padded:
        x = x.masked_fill(~valid[..., None], 0.0)
    transformer = encoder.transformer
    x = x + transformer.pos_conv_embed(x)
    if not arch.layer_norm_first:
        x = transformer.layer_norm(x)
    mask = valid[:, None, None, :].expand(x.shape[0], 1, x.shape[1], x.shape[1]) if padded else None
    layers = [x]
    for layer in transformer.layers:
        x, _ = layer(x, attention_mask=mask)
        layers.append(x)
    if arch.layer_norm_first:
        layers[-1] = transformer.layer_norm(layers[-1])
    return [torch.stack([h[i, :n] for h in layers], dim=1) for i, n in enumerate(frames)]


@register
class Hubert(Upstream):
    """Audio only: the transformer input plus each layer's output (13 × 768 at 50 Hz for Base)."""

    name = "hubert"
    sample_rate = SAMPLE_RATE
    video_fps = None

    def __init__(self, checkpoint: Path | None = None, device: str = "cpu") -> None:
        if checkpoint is None:
            raise UpstreamError(f"hubert needs --checkpoint PATH: {ACCEPTED}")
        super().__init__(Path(checkpoint), device)
        ckpt = read_checkpoint(self.checkpoint)
        self.arch = infer_arch(ckpt)
        self.source = ckpt.source
        self.finetuned = ckpt.finetuned
        self.weights_file = ckpt.weights_file
        # fairseq normalises per utterance where the task says so (Large); where the checkpoint does not say,
        # follow the releases: layer-norm extractors (Large, X-Large) were trained on normalised audio, Base was not.
        self.normalize = ckpt.hints.normalize if ckpt.hints.normalize is not None else self.arch.extractor_mode == "layer_norm"
        self.model = build_model(self.arch, ckpt.state, ckpt.weights_file).to(self.device)
        log.info(
            "hubert: %s checkpoint %s, %d layers x %d dims, %s, %s%s",
            self.source, self.checkpoint, self.arch.num_layers, self.arch.embed_dim, self.arch.extractor_mode,
            "pre-LN" if self.arch.layer_norm_first else "post-LN", ", fine-tuned" if self.finetuned else "",
        )

    @property
    def tracks(self) -> dict[str, TrackInfo]:
        return {"audio": TrackInfo(self.arch.num_layers + 1, self.arch.embed_dim, SAMPLE_RATE / self.arch.hop)}

    def config(self) -> dict[str, Any]:
        arch = asdict(self.arch)
        arch["conv_layers"] = [list(c) for c in self.arch.conv_layers]
        return {
            "source": self.source,
            "finetuned": self.finetuned,
            **arch,
            "normalize_waveform": self.normalize,
            "layers": "transformer input, then each layer's output" + (" (final layer norm on the last)" if self.arch.layer_norm_first else ""),
        }

    def checkpoint_sha256(self) -> str | None:
        """Of the weights file itself (for a Hugging Face directory, its model.safetensors or pytorch_model.bin)."""
        digest = hashlib.sha256()
        with open(self.weights_file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()

    def _waves(self, audios: list[np.ndarray | torch.Tensor | None]) -> list[torch.Tensor]:
        waves = []
        for i, a in enumerate(audios):
            which = f" (clip {i + 1} of {len(audios)} in the batch)" if len(audios) > 1 else ""
            if a is None:
                raise ValueError(f"hubert needs the audio stream, and this clip has none{which}")
            w = (a if isinstance(a, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(a))).to(self.device, torch.float32)
            if w.ndim != 1:
                raise ValueError(f"hubert expects mono audio [samples], got shape {tuple(w.shape)}{which}")
            if w.numel() < self.arch.receptive_field:
                raise ValueError(
                    f"audio of {w.numel()} samples is shorter than hubert's {self.arch.receptive_field}-sample "
                    f"({1000 * self.arch.receptive_field / SAMPLE_RATE:g} ms) receptive field{which}"
                )
            waves.append(F.layer_norm(w, w.shape) if self.normalize else w)
        return waves

    def _check(self, track: str) -> None:
        if track != "audio":
            raise UpstreamError(f"hubert offers only the 'audio' track, not {track!r}")

    def forward(self, track: str, audio: torch.Tensor | None, video: torch.Tensor | None) -> list[torch.Tensor]:
        self._check(track)
        return list(hidden_states(self.model, self.arch, self._waves([audio]))[0].unbind(1))

    @torch.inference_mode()
    def extract_batch(
        self, tracks: list[str], items: list[tuple[np.ndarray | None, np.ndarray | None]]
    ) -> list[dict[str, np.ndarray]]:
        for t in tracks:
            self._check(t)
        if not items or not tracks:
            return [{} for _ in items]
        feats = hidden_states(self.model, self.arch, self._waves([a for a, _ in items]))
        return [{"audio": f.float().cpu().numpy()} for f in feats]
