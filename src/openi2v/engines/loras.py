"""LoRA files fused into a transformer's weights, in the layouts people publish.

Three namings, told apart by the keys (``layout``):

- diffusers: ``[transformer.|base_model.model.]blocks.0.attn1.to_q.lora_A.weight``, the model's own
  names, so any model (Wan, LTX);
- wan: ``[diffusion_model.]blocks.0.self_attn.q.lora_down.weight`` (or ``lora_A``), original Wan names
  (LightX2V, Kijai), renamed by ``wan_name``;
- kohya: ``lora_unet_blocks_0_self_attn_q.lora_down.weight``, original Wan names with ``_`` for ``.``
  (musubi-tuner, ComfyUI), read back by ``KOHYA``'s patterns.

What each key adds at the LoRA's ``scale``: a down/up pair (``lora_down``/``lora_up`` or
``lora_A``/``lora_B``) adds scale·(alpha/rank)·up@down to the weight, alpha from the module's
``.alpha`` tensor, else the adapter metadata diffusers writes into the file's header, else the
rank; ``lora_B.bias`` adds scale·(alpha/rank)·bias (PEFT's ``lora_bias``); ``.diff`` adds
scale·diff to the weight (LightX2V stores norms and small layers whole), ``.diff_b`` to the
bias, ``.diff_m`` to a Wan block's modulation. Each sum is taken in float32, one parameter at a
time (never a full-size copy of the model), and cast back to the parameter's dtype.

Every key must land: one that names no parameter of the transformer, or whose shape does not
fit, is a ValueError raised before any weight changes, since a half-applied LoRA makes wrong
videos without a word. One exception: keys of Wan 2.1's image branch, on a model without one
(``IMAGE_BRANCH``).
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections import defaultdict
from dataclasses import dataclass

import torch
from safetensors import safe_open

log = logging.getLogger("openi2v.engines.loras")

# key suffix -> what the tensor is
KINDS = {"lora_down.weight": "down", "lora_A.weight": "down", "lora_up.weight": "up", "lora_B.weight": "up",
         "lora_B.bias": "up_bias", "alpha": "alpha", "diff": "diff", "diff_b": "diff_b", "diff_m": "diff_m"}
# a delta applied whole -> the parameter of its module it changes
DIFF_LEAVES = {"diff": "weight", "diff_b": "bias", "diff_m": "modulation"}

# Original Wan module -> diffusers' WanTransformer3DModel, as diffusers' own converters rename them
# (loaders/single_file_utils.py ``convert_wan_transformer_to_diffusers`` and
# loaders/lora_conversion_utils.py ``_convert_non_diffusers_wan_lora_to_diffusers``).
WAN_ATTENTION = {"self_attn": "attn1", "cross_attn": "attn2"}
WAN_ATTENTION_PARTS = {"q": "to_q", "k": "to_k", "v": "to_v", "o": "to_out.0", "k_img": "add_k_proj",
                       "v_img": "add_v_proj", "norm_q": "norm_q", "norm_k": "norm_k", "norm_k_img": "norm_added_k"}
WAN_BLOCK_PARTS = {"ffn.0": "ffn.net.0.proj", "ffn.2": "ffn.net.2", "norm3": "norm2", "norm2": "norm3",
                   "modulation": "scale_shift_table"}
WAN_TOP = {
    "patch_embedding": "patch_embedding",
    "text_embedding.0": "condition_embedder.text_embedder.linear_1",
    "text_embedding.2": "condition_embedder.text_embedder.linear_2",
    "time_embedding.0": "condition_embedder.time_embedder.linear_1",
    "time_embedding.2": "condition_embedder.time_embedder.linear_2",
    "time_projection.1": "condition_embedder.time_proj",
    "img_emb.proj.0": "condition_embedder.image_embedder.norm1",
    "img_emb.proj.1": "condition_embedder.image_embedder.ff.net.0.proj",
    "img_emb.proj.3": "condition_embedder.image_embedder.ff.net.2",
    "img_emb.proj.4": "condition_embedder.image_embedder.norm2",
    "head.head": "proj_out",
    "head.modulation": "scale_shift_table",
}
# Wan 2.1 I2V's CLIP image branch. Wan 2.2 A14B has none, yet LoRAs published for it carry these
# modules (LightX2V's distill LoRAs, ModelTC/LightX2V#1246; Wan 2.1 LoRAs used on 2.2): on a model
# without the branch they are skipped, the one exception to "every key must land".
IMAGE_BRANCH = re.compile(r"\.(add_k_proj|add_v_proj|norm_added_k)\.|^condition_embedder\.image_embedder\.")
# kohya's module name (dots written as underscores) -> the original Wan module
KOHYA = [(re.compile(pattern), dotted) for pattern, dotted in (
    (r"blocks_(\d+)_(self_attn|cross_attn)_(q|k|v|o|k_img|v_img|norm_q|norm_k|norm_k_img)", r"blocks.\1.\2.\3"),
    (r"blocks_(\d+)_ffn_([02])", r"blocks.\1.ffn.\2"),
    (r"blocks_(\d+)_(norm2|norm3)", r"blocks.\1.\2"),
    (r"(text_embedding|time_embedding)_([02])", r"\1.\2"),
    (r"time_projection_1", "time_projection.1"),
    (r"img_emb_proj_([0134])", r"img_emb.proj.\1"),
    (r"head_head", "head.head"),
    (r"patch_embedding", "patch_embedding"),
)]


def wan_name(module: str) -> str | None:
    """The diffusers name of an original Wan module (or of a ``modulation`` parameter)."""
    block = re.fullmatch(r"blocks\.(\d+)\.(.+)", module)
    if block is None:
        return WAN_TOP.get(module)
    n, part = block.groups()
    attention, _, sub = part.partition(".")
    if attention in WAN_ATTENTION and sub in WAN_ATTENTION_PARTS:
        return f"blocks.{n}.{WAN_ATTENTION[attention]}.{WAN_ATTENTION_PARTS[sub]}"
    return f"blocks.{n}.{WAN_BLOCK_PARTS[part]}" if part in WAN_BLOCK_PARTS else None


def kohya_module(stem: str) -> str | None:
    """The original Wan module a ``lora_unet_...`` name stands for."""
    name = stem.removeprefix("lora_unet_")
    for pattern, dotted in KOHYA:
        if pattern.fullmatch(name):
            return pattern.sub(dotted, name)
    return None


def layout(keys) -> str:
    """"diffusers", "wan" or "kohya": the naming a file's keys follow."""
    if any(k.startswith("lora_unet_") for k in keys):
        return "kohya"
    wan = re.compile(r"(^|\.)(self_attn|cross_attn|ffn\.[02])\.")
    if any(k.startswith("diffusion_model.") or wan.search(k) for k in keys):
        return "wan"
    return "diffusers"


def target(kind: str, stem: str, leaf: str) -> str | None:
    """The transformer parameter that a module ``stem`` of a file in layout ``kind`` names by ``leaf``."""
    if kind == "diffusers":
        return f"{stem.removeprefix('base_model.model.').removeprefix('transformer.')}.{leaf}"
    module = kohya_module(stem) if kind == "kohya" else stem.removeprefix("diffusion_model.")
    if module is None:
        return None
    if leaf == "modulation":
        return wan_name(f"{module}.modulation")
    name = wan_name(module)
    return name and f"{name}.{leaf}"


@dataclass
class Edit:
    """One parameter changed by one delta (``key``) or one down/up pair of the file."""
    param: str | None  # None: the key names no module this model could have
    key: str  # the delta, or the pair's down key
    up: str | None = None
    alpha: str | None = None  # the pair's ``.alpha`` key, if any
    bias: str | None = None  # with ``up_bias`` (a pair's ``lora_B.bias`` key): the bias parameter it changes
    up_bias: str | None = None

    def keys(self) -> list[str]:
        return [k for k in (self.key, self.up, self.alpha, self.up_bias) if k is not None]


def merge_lora(transformer, path: str, scale: float, device: str = "cpu") -> int:
    """Add the LoRA in ``path`` to ``transformer``'s weights at ``scale``; how many parameters changed.
    The sums are computed on ``device`` (a GPU: seconds where a CPU takes minutes for a 14B expert)
    wherever the weights are."""
    params = dict(transformer.named_parameters())
    with safe_open(path, framework="pt", device="cpu") as f:
        edits = plan(f, params, path, type(transformer).__name__)
        peft = adapter_config(f.metadata())
        with torch.no_grad():
            for edit in edits:
                apply(f, edit, params, scale, peft, torch.device(device))
    return len(edits) + sum(edit.up_bias is not None for edit in edits)


def plan(f, params: dict, path: str, model: str) -> list[Edit]:
    """The edits a file makes, every key matched and every shape checked before anything changes."""
    keys = list(f.keys())
    kind = layout(keys)
    stems: dict[str, dict[str, str]] = defaultdict(dict)  # module stem -> kind of tensor -> key
    unmatched = []
    for key in keys:
        suffix = next((s for s in KINDS if key.endswith("." + s)), None)
        if suffix is None:
            unmatched.append(key)
        else:
            stems[key[:-len(suffix) - 1]][KINDS[suffix]] = key
    edits = [edit for stem, parts in stems.items() for edit in stem_edits(kind, stem, parts, path)]
    if not any(IMAGE_BRANCH.search(name) for name in params):
        skipped = [edit for edit in edits if edit.param and IMAGE_BRANCH.search(edit.param)]
        if skipped:
            log.info("LoRA %s: %d image-branch modules skipped: %s has no image branch", path, len(skipped), model)
            edits = [edit for edit in edits if edit not in skipped]
    for edit in edits:
        if edit.param not in params or (edit.up_bias is not None and edit.bias not in params):
            unmatched.extend(edit.keys())
    if unmatched:
        raise ValueError(f"LoRA {path}: key {unmatched[0]!r} matches no parameter of {model} "
                         f"({len(unmatched)} of {len(keys)} keys match none); is it for another model?")
    for edit in edits:
        check_shapes(f, edit, params, path)
    return edits


def stem_edits(kind: str, stem: str, parts: dict[str, str], path: str) -> list[Edit]:
    """What the keys of one module (``parts``: kind of tensor -> key) change."""
    edits = [Edit(target(kind, stem, leaf), parts[part]) for part, leaf in DIFF_LEAVES.items() if part in parts]
    pair = {p: parts[p] for p in ("down", "up", "alpha", "up_bias") if p in parts}
    if not pair:
        return edits
    if "down" not in pair or "up" not in pair:
        missing = "lora_up (lora_B)" if "down" in pair else "lora_down (lora_A)"
        raise ValueError(f"LoRA {path}: key {pair.get('down') or next(iter(pair.values()))!r} has no {missing} "
                         f"beside it")
    bias = target(kind, stem, "bias") if "up_bias" in pair else None
    return edits + [Edit(target(kind, stem, "weight"), pair["down"], pair["up"], pair.get("alpha"), bias,
                         pair.get("up_bias"))]


def check_shapes(f, edit: Edit, params: dict, path: str) -> None:
    """A ValueError naming the key whose shape does not fit its parameter."""
    want = tuple(params[edit.param].shape)
    shape = tuple(f.get_slice(edit.key).get_shape())
    if edit.up is None:
        if shape != want:
            raise ValueError(f"LoRA {path}: key {edit.key!r} has shape {shape}, {edit.param} has {want}")
        return
    up = tuple(f.get_slice(edit.up).get_shape())
    if up[0] != want[0] or math.prod(up[1:]) != shape[0] or math.prod(shape[1:]) != math.prod(want[1:]):
        raise ValueError(f"LoRA {path}: keys {edit.key!r} {shape} and {edit.up!r} {up} do not make "
                         f"{edit.param} {want}")
    if edit.up_bias is not None and tuple(f.get_slice(edit.up_bias).get_shape()) != params[edit.bias].shape:
        raise ValueError(f"LoRA {path}: key {edit.up_bias!r} does not fit {edit.bias} "
                         f"{tuple(params[edit.bias].shape)}")


def adapter_config(metadata: dict | None) -> dict:
    """The transformer's PEFT adapter config that diffusers' ``save_lora_weights`` keeps in the file header
    (JSON under ``lora_adapter_metadata``, keys prefixed ``transformer.``); empty where absent."""
    raw = (metadata or {}).get("lora_adapter_metadata")
    config = json.loads(raw) if raw else {}
    if any(k.startswith("transformer.") for k in config):
        config = {k.removeprefix("transformer."): v for k, v in config.items() if k.startswith("transformer.")}
    return config


def ratio(f, edit: Edit, rank: int, peft: dict) -> float:
    """alpha / rank for a pair (alpha / √rank under PEFT's ``use_rslora``)."""
    if edit.alpha is not None:
        return f.get_tensor(edit.alpha).item() / rank
    module = edit.param.removesuffix(".weight")
    # PEFT matches an alpha_pattern key against the module name's tail (peft.utils.other.get_pattern_key)
    alpha = next((a for p, a in (peft.get("alpha_pattern") or {}).items() if re.match(rf"(.*\.)?({p})$", module)),
                 peft.get("lora_alpha", rank))
    return alpha / (math.sqrt(rank) if peft.get("use_rslora") else rank)


def apply(f, edit: Edit, params: dict, scale: float, peft: dict, device: torch.device) -> None:
    """One parameter += its delta, summed in float32 on ``device``, cast back to the parameter's dtype."""
    param = params[edit.param]
    if edit.up is None:
        _add(param, scale * f.get_tensor(edit.key).to(device, torch.float32))
        return
    down = f.get_tensor(edit.key).to(device, torch.float32)
    up = f.get_tensor(edit.up).to(device, torch.float32)
    factor = scale * ratio(f, edit, down.shape[0], peft)
    _add(param, factor * (up.flatten(1) @ down.flatten(1)).view(param.shape))
    if edit.up_bias is not None:
        _add(params[edit.bias], factor * f.get_tensor(edit.up_bias).to(device, torch.float32))


def _add(param, delta) -> None:
    param.copy_((param.to(delta.device, torch.float32) + delta).to(param.dtype))
