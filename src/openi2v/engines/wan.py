"""Wan image-to-video through ``diffusers.WanImageToVideoPipeline``.

One engine for the three layouts the class runs: Wan 2.2 I2V-A14B (two experts switched
at ``boundary_ratio``), Wan 2.2 TI2V-5B (first-frame latent substituted, per-token
timesteps) and Wan 2.1 I2V (CLIP image tokens). The weights directory says which: the
pipeline is rebuilt from its own ``model_index.json``.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from openi2v.engines.diffusion import DiffusionEngine, generator, step_callback, to_uint8


class WanEngine(DiffusionEngine):
    family = "wan"

    def _open(self, dtype):
        from diffusers import UniPCMultistepScheduler, WanImageToVideoPipeline

        p = self.preset
        # 1. Load the pipeline from a local diffusers directory (or the HF cache: never the network here).
        pipe = WanImageToVideoPipeline.from_pretrained(self.weights, dtype=dtype, local_files_only=True)
        # 2. A preset may set the flow shift (distilled LoRAs expect their own schedule).
        if p.flow_shift is not None:
            pipe.scheduler = UniPCMultistepScheduler.from_config(pipe.scheduler.config, flow_shift=p.flow_shift)
        # 3. LoRAs (DiffusionEngine.load), speed-ups and the device come next, from the outside (accel.py).
        return pipe

    def _sample(self, image: Image.Image, prompt: str, negative: str, cfg: float, seed: int, width: int,
                height: int, last: Image.Image | None, steps: int, step) -> np.ndarray:
        p = self.preset
        # 1. The call: first frame, prompt, CFG on both experts, seeded noise, per-step callback.
        kwargs = dict(image=image, prompt=prompt, negative_prompt=negative or None, height=height, width=width,
                      num_frames=p.frames, num_inference_steps=steps, guidance_scale=cfg,
                      generator=generator(seed), output_type="pt", callback_on_step_end=step_callback(step))
        if self.pipe.transformer_2 is not None:
            kwargs["guidance_scale_2"] = cfg
        # 2. First-last-frame conditioning where the layout has it (not TI2V-5B's expanded timesteps).
        if last is not None and not self.pipe.config.expand_timesteps:
            kwargs["last_image"] = last
        # 3. Run, and hand back uint8 frames.
        return to_uint8(self.pipe(**kwargs, **p.extra).frames[0])
