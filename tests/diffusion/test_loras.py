"""LoRA files in each published layout, fused into the tiny Wan 2.2 A14B's two experts through the real
engine and checked parameter by parameter against a merge computed here, from this file's own name
table and the base model as saved."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from openi2v.engines.accel import Speedups
from openi2v.engines.catalog import Lora, get_preset
from openi2v.engines.loras import merge_lora
from openi2v.engines.ltx import LTXEngine
from openi2v.engines.wan import WanEngine
from tests import tiny_models

RANK = 4
TURBO = get_preset("wan2.2-i2v-a14b-turbo").with_overrides(steps=2, size=(48, 32))

# Original Wan module -> diffusers' WanTransformer3DModel module, for the tiny model's two blocks,
# written from diffusers' Wan converters (test_the_wan_names_here_are_diffusers_own checks the LoRA pairs).
WAN_PAIRS = {
    **{f"blocks.{i}.{wan}.{w}": f"blocks.{i}.{ours}.{o}" for i in (0, 1)
       for wan, ours in (("self_attn", "attn1"), ("cross_attn", "attn2"))
       for w, o in (("q", "to_q"), ("k", "to_k"), ("v", "to_v"), ("o", "to_out.0"))},
    **{f"blocks.{i}.ffn.{w}": f"blocks.{i}.ffn.{o}" for i in (0, 1) for w, o in (("0", "net.0.proj"), ("2", "net.2"))},
    "text_embedding.0": "condition_embedder.text_embedder.linear_1",
    "text_embedding.2": "condition_embedder.text_embedder.linear_2",
    "time_embedding.0": "condition_embedder.time_embedder.linear_1",
    "time_embedding.2": "condition_embedder.time_embedder.linear_2",
    "time_projection.1": "condition_embedder.time_proj",
    "head.head": "proj_out",
}
# modules LightX2V's extractor stores whole (``.diff`` for the weight, ``.diff_b`` for a bias)
WAN_WHOLE = {"blocks.0.norm3": "blocks.0.norm2", "blocks.1.self_attn.norm_q": "blocks.1.attn1.norm_q",
             "blocks.0.cross_attn.norm_k": "blocks.0.attn2.norm_k", "patch_embedding": "patch_embedding"}
WAN_MODULATION = {"blocks.1": "blocks.1.scale_shift_table", "head": "scale_shift_table"}  # ``.diff_m``
# Wan 2.1 I2V's image branch, absent from Wan 2.2 A14B
WAN_IMAGE_PAIRS = {"blocks.0.cross_attn.k_img": "blocks.0.attn2.add_k_proj",
                   "blocks.1.cross_attn.v_img": "blocks.1.attn2.add_v_proj",
                   "img_emb.proj.1": "condition_embedder.image_embedder.ff.net.0.proj",
                   "img_emb.proj.3": "condition_embedder.image_embedder.ff.net.2"}
WAN_IMAGE_WHOLE = {"blocks.1.cross_attn.norm_k_img": "blocks.1.attn2.norm_added_k",
                   "img_emb.proj.0": "condition_embedder.image_embedder.norm1",
                   "img_emb.proj.4": "condition_embedder.image_embedder.norm2"}


class Merge:
    """A random LoRA being written (its keys in one layout) and the weights it must give (diffusers names),
    merged here with the plain formula: W + scale·(alpha/rank)·up@down, b + scale·diff_b, W + scale·diff."""

    def __init__(self, base: dict, scale: float, seed: int):
        self.base = base
        self.expected = {k: v.clone() for k, v in base.items()}
        self.scale = scale
        self.tensors: dict[str, torch.Tensor] = {}
        self.generator = torch.Generator().manual_seed(seed)

    def random(self, *shape) -> torch.Tensor:
        return torch.randn(*shape, generator=self.generator) * 0.3

    def pair(self, stem: str, module: str, alpha: float | None, names=("lora_down", "lora_up"),
             bias: str | None = None) -> None:
        weight = self.expected[f"{module}.weight"]
        down, up = self.random(RANK, weight.shape[1]), self.random(weight.shape[0], RANK)
        self.tensors |= {f"{stem}.{names[0]}.weight": down, f"{stem}.{names[1]}.weight": up}
        if alpha is not None:
            self.tensors[f"{stem}.alpha"] = torch.tensor(float(alpha))
        ratio = (RANK if alpha is None else alpha) / RANK
        weight += self.scale * ratio * (up @ down)
        if bias:  # PEFT's lora_B.bias: scaled like the pair
            self.tensors[f"{stem}.{bias}"] = b = self.random(weight.shape[0])
            self.expected[f"{module}.bias"] += self.scale * ratio * b

    def whole(self, key: str, param: str) -> None:
        self.tensors[key] = delta = self.random(*self.expected[param].shape)
        self.expected[param] += self.scale * delta

    def save(self, path) -> str:
        save_file(self.tensors, path)
        return str(path)


def wan_lora(merge: Merge, prefix: str = "diffusion_model.", names=("lora_down", "lora_up"),
             pairs=WAN_PAIRS, whole=WAN_WHOLE) -> None:
    """LightX2V's layout: original Wan names, pairs (some with alpha) with ``diff_b`` for their biases,
    small layers whole (``diff``, ``diff_b``) and block modulations (``diff_m``)."""
    for n, (wan, ours) in enumerate(pairs.items()):
        merge.pair(f"{prefix}{wan}", ours, alpha=(8.0 if n % 2 else None), names=names)
        merge.whole(f"{prefix}{wan}.diff_b", f"{ours}.bias")
    for wan, ours in whole.items():
        merge.whole(f"{prefix}{wan}.diff", f"{ours}.weight")
        if f"{ours}.bias" in merge.base:
            merge.whole(f"{prefix}{wan}.diff_b", f"{ours}.bias")
    for wan, ours in WAN_MODULATION.items():
        merge.whole(f"{prefix}{wan}.diff_m", ours)


def kohya_lora(merge: Merge) -> None:
    """musubi-tuner's and ComfyUI's layout: ``lora_unet_`` and the Wan name with underscores, alpha always."""
    for wan, ours in WAN_PAIRS.items():
        merge.pair("lora_unet_" + wan.replace(".", "_"), ours, alpha=16.0)


def peft_lora(merge: Merge) -> None:
    """A PEFT model's own state dict: ``base_model.model.`` names, ``.alpha`` tensors, ``lora_B.bias``."""
    for module in ("blocks.0.attn1.to_q", "blocks.1.attn2.to_out.0", "blocks.0.ffn.net.2", "proj_out"):
        merge.pair(f"base_model.model.{module}", module, alpha=2.0, names=("lora_A", "lora_B"), bias="lora_B.bias")


def diffusers_lora(merge: Merge, directory, seed: int, config: dict) -> str:
    """A LoRA as diffusers' training scripts save it (PEFT config in the header), read back and merged here:
    names are the model's own after ``transformer.``, alpha from ``lora_alpha`` or ``alpha_pattern``."""
    path = tiny_models.save_lora(directory, "wan2.2-a14b", f"diffusers-{seed}.safetensors", seed=seed, **config)
    with safe_open(path, framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    for key, down in tensors.items():
        if key.endswith(".lora_A.weight"):
            module = key.removeprefix("transformer.").removesuffix(".lora_A.weight")
            up = tensors[key.replace("lora_A", "lora_B")]
            alpha = config["alpha_pattern"].get(module.split(".", 2)[2], config["lora_alpha"])
            ratio = alpha / (math.sqrt(RANK) if config.get("use_rslora") else RANK)
            merge.expected[f"{module}.weight"] += merge.scale * ratio * (up @ down)
    return str(path)


def write(layout: str, base: dict, scale: float, seed: int, directory) -> tuple[str, dict]:
    """A LoRA file in ``layout`` and the expert's weights it must give at ``scale``."""
    merge = Merge(base, scale, seed)
    if layout == "diffusers":  # one expert by lora_alpha and alpha_pattern, the other by rsLoRA
        config = {"lora_alpha": 8, "alpha_pattern": {"attn2.to_k": 2}} if seed == 1 else \
            {"lora_alpha": 8, "alpha_pattern": {}, "use_rslora": True}
        return diffusers_lora(merge, directory, seed, config), merge.expected
    if layout == "peft":
        peft_lora(merge)
    elif layout == "kohya":
        kohya_lora(merge)
    elif layout == "wan-ab":  # lora_A/lora_B, no diffusion_model. prefix
        wan_lora(merge, prefix="", names=("lora_A", "lora_B"))
    else:
        wan_lora(merge)
    return merge.save(directory / f"{layout}-{seed}.safetensors"), merge.expected


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return tiny_models.save("wan2.2-a14b", tmp_path_factory.mktemp("tiny") / "wan2.2-a14b")


def base_state(weights, expert: str) -> dict:
    """An expert's weights as saved, loaded fresh (not through the engine)."""
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel.from_pretrained(weights / expert).state_dict()


def assert_weights(transformer, expected: dict) -> None:
    actual = transformer.state_dict()
    assert actual.keys() == expected.keys()
    for name, value in actual.items():
        torch.testing.assert_close(value, expected[name], msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("layout", ["diffusers", "peft", "wan", "wan-ab", "kohya"])
def test_each_layout_merges_into_both_experts_at_its_own_scale(weights, layout, tmp_path):
    high, high_expected = write(layout, base_state(weights, "transformer"), 1.0, 1, tmp_path)
    low, low_expected = write(layout, base_state(weights, "transformer_2"), 0.5, 2, tmp_path)
    preset = replace(TURBO, loras=(Lora(path=high), Lora(path=low, into="transformer_2", scale=0.5)))
    engine = WanEngine(preset, weights, "cpu", Speedups.parse(["sdpa"]))
    engine.load()
    assert_weights(engine.pipe.transformer, high_expected)
    assert_weights(engine.pipe.transformer_2, low_expected)


def test_wan_2_1_image_layers_merge_by_their_original_names(tmp_path):
    transformer = tiny_models.wan_image_transformer()
    merge = Merge(transformer.state_dict(), 0.7, seed=4)
    wan_lora(merge, pairs=WAN_PAIRS | WAN_IMAGE_PAIRS, whole=WAN_WHOLE | WAN_IMAGE_WHOLE)
    merge_lora(transformer, merge.save(tmp_path / "i2v.safetensors"), 0.7)
    assert_weights(transformer, merge.expected)


def test_bf16_weights_are_summed_in_float32_and_rounded_once(tmp_path):
    transformer = tiny_models.build("wan2.2-a14b").transformer.to(torch.bfloat16)
    merge = Merge({k: v.float() for k, v in transformer.state_dict().items()}, 0.5, seed=7)
    wan_lora(merge)
    merge_lora(transformer, merge.save(tmp_path / "bf16.safetensors"), 0.5)
    for name, value in transformer.state_dict().items():
        assert value.dtype == torch.bfloat16 and torch.equal(value, merge.expected[name].to(torch.bfloat16)), name


def test_the_wan_names_here_are_diffusers_own(tmp_path):
    """This file's table is the one diffusers' converters use: its LoRA converter for the pairs (and
    their ``diff_b``), its single-file checkpoint converter for every name."""
    from diffusers import WanImageToVideoPipeline
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    pairs = WAN_PAIRS | WAN_IMAGE_PAIRS
    tensors = {f"diffusion_model.{wan}.{part}": torch.zeros(RANK, RANK) for wan in pairs
               for part in ("lora_down.weight", "lora_up.weight", "diff_b")}
    save_file(tensors, tmp_path / "names.safetensors")
    converted = WanImageToVideoPipeline.lora_state_dict(str(tmp_path / "names.safetensors"))
    assert set(converted) == {f"transformer.{ours}.{part}" for ours in pairs.values()
                              for part in ("lora_A.weight", "lora_B.weight", "lora_B.bias")}
    modules = pairs | WAN_WHOLE | WAN_IMAGE_WHOLE
    checkpoint = {f"{wan}.weight": None for wan in modules} | {f"{wan}.modulation": None for wan in WAN_MODULATION}
    assert set(convert_wan_transformer_to_diffusers(checkpoint)) == \
        {f"{ours}.weight" for ours in modules.values()} | set(WAN_MODULATION.values())


def test_a_diffusers_lora_merges_into_ltx(tmp_path):
    weights = tiny_models.save("ltx", tmp_path / "ltx")
    path = tiny_models.save_lora(tmp_path, "ltx", "ltx.safetensors", seed=5, lora_alpha=2)
    from diffusers import LTXVideoTransformer3DModel

    expected = LTXVideoTransformer3DModel.from_pretrained(weights / "transformer").state_dict()
    with safe_open(path, framework="pt") as f:
        for key in (k for k in f.keys() if k.endswith(".lora_A.weight")):
            module = key.removeprefix("transformer.").removesuffix(".lora_A.weight")
            up = f.get_tensor(key.replace("lora_A", "lora_B"))
            expected[f"{module}.weight"] += 0.8 * (2 / RANK) * (up @ f.get_tensor(key))
    preset = get_preset("ltx-video-0.9.8-distilled").with_overrides(steps=2, size=(64, 32))
    engine = LTXEngine(replace(preset, loras=(Lora(path=str(path), scale=0.8),)), weights, "cpu",
                       Speedups.parse(["sdpa"]))
    engine.load()
    assert_weights(engine.pipe.transformer, expected)


def lora_with(extra: dict, weights) -> dict:
    """A valid original-Wan LoRA for the tiny A14B expert, plus ``extra`` keys."""
    merge = Merge(base_state(weights, "transformer"), 1.0, seed=6)
    merge.pair("diffusion_model.blocks.0.self_attn.q", "blocks.0.attn1.to_q", alpha=None)
    return merge.tensors | extra


@pytest.mark.parametrize("extra, message", [
    ({"diffusion_model.blocks.0.self_attn.q.weight": torch.ones(24, 24)},
     r"key 'diffusion_model\.blocks\.0\.self_attn\.q\.weight' matches no parameter .* \(1 of 3 keys"),
    ({"diffusion_model.blocks.0.ffn.0.lora_down.weight": torch.ones(RANK, 25),
      "diffusion_model.blocks.0.ffn.0.lora_up.weight": torch.ones(32, RANK)},
     r"keys 'diffusion_model\.blocks\.0\.ffn\.0\.lora_down\.weight' \(4, 25\) .* do not make "
     r"blocks\.0\.ffn\.net\.0\.proj\.weight \(32, 24\)"),
    ({"diffusion_model.blocks.0.norm3.diff": torch.ones(25)},
     r"key 'diffusion_model\.blocks\.0\.norm3\.diff' has shape \(25,\), blocks\.0\.norm2\.weight has \(24,\)"),
    ({"diffusion_model.blocks.1.ffn.2.lora_down.weight": torch.ones(RANK, 32)},
     r"key 'diffusion_model\.blocks\.1\.ffn\.2\.lora_down\.weight' has no lora_up"),
])
def test_a_lora_that_does_not_fit_is_refused_before_any_weight_changes(weights, tmp_path, extra, message):
    path = str(tmp_path / "bad.safetensors")
    save_file(lora_with(extra, weights), path)
    transformer = tiny_models.build("wan2.2-a14b").transformer
    before = {k: v.clone() for k, v in transformer.state_dict().items()}
    with pytest.raises(ValueError, match=f"LoRA {path}: {message}"):
        merge_lora(transformer, path, 1.0)
    assert_weights(transformer, before)


def test_image_branch_keys_are_skipped_on_a_model_without_one(weights, tmp_path, caplog):
    """LightX2V's Wan 2.2 I2V LoRAs are reported to carry Wan 2.1's image branch (ModelTC/LightX2V#1246),
    which Wan 2.2 A14B does not have: those keys are skipped, and everything else lands exactly."""
    from diffusers import WanTransformer3DModel

    merge = Merge(base_state(weights, "transformer"), 1.0, seed=7)
    wan_lora(merge)
    merge.tensors |= {"diffusion_model.blocks.0.cross_attn.k_img.lora_down.weight": torch.ones(RANK, 24),
                      "diffusion_model.blocks.0.cross_attn.k_img.lora_up.weight": torch.ones(24, RANK),
                      "diffusion_model.blocks.1.cross_attn.norm_k_img.diff": torch.ones(24),
                      "diffusion_model.img_emb.proj.1.lora_down.weight": torch.ones(RANK, 4),
                      "diffusion_model.img_emb.proj.1.lora_up.weight": torch.ones(4, RANK)}
    path = merge.save(tmp_path / "lightx2v-like.safetensors")
    transformer = WanTransformer3DModel.from_pretrained(weights / "transformer")
    with caplog.at_level("INFO", logger="openi2v.engines.loras"):
        merge_lora(transformer, path, 1.0)
    assert_weights(transformer, merge.expected)
    assert "3 image-branch modules skipped: WanTransformer3DModel has no image branch" in caplog.text


def test_the_engine_refuses_a_lora_for_another_model(weights, tmp_path):
    path = str(tmp_path / "other.safetensors")
    save_file(lora_with({"diffusion_model.blocks.7.self_attn.q.diff_b": torch.ones(24)}, weights), path)
    engine = WanEngine(replace(TURBO, loras=(Lora(path=path),)), weights, "cpu", Speedups.parse(["sdpa"]))
    with pytest.raises(ValueError, match=r"blocks\.7\.self_attn\.q\.diff_b' matches no parameter"):
        engine.load()
    assert engine.pipe is None


def test_a_missing_lora_file_says_where_it_looked_and_how_to_get_it(weights, tmp_path):
    lora = Lora("someone/loras", "missing.safetensors", "transformer_2")
    engine = WanEngine(replace(TURBO, loras=(lora,)), weights, "cpu", Speedups.parse(["sdpa"]))
    with pytest.raises(FileNotFoundError) as caught:
        engine.load()
    message = str(caught.value)
    assert "\n" not in message
    assert message == (f"LoRA missing.safetensors from someone/loras of wan2.2-i2v-a14b-turbo not found in "
                       f"{weights.parent / 'loras' / 'missing.safetensors'} or the Hugging Face cache; "
                       f"run: openi2v models pull wan2.2-i2v-a14b-turbo")
    gone = str(tmp_path / "gone.safetensors")
    engine = WanEngine(replace(TURBO, loras=(Lora(path=gone),)), weights, "cpu", Speedups.parse(["sdpa"]))
    with pytest.raises(FileNotFoundError, match=f"^LoRA file {gone} of wan2.2-i2v-a14b-turbo does not exist; "):
        engine.load()


def test_a_lora_for_a_second_expert_the_pipeline_lacks_names_the_preset(tmp_path):
    weights = tiny_models.save("wan2.2-5b", tmp_path / "wan2.2-5b")
    lora = Lora("someone/loras", "low.safetensors", "transformer_2")
    preset = replace(get_preset("wan2.2-ti2v-5b-turbo"), loras=(lora,))
    engine = WanEngine(preset, weights, "cpu", Speedups.parse(["sdpa"]))
    with pytest.raises(ValueError, match=r"^preset wan2.2-ti2v-5b-turbo: LoRA low.safetensors from someone/loras is "
                                         r"for transformer_2, which the pipeline in .* does not have$"):
        engine.load()

