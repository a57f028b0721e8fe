"""LTX-Video image-to-video through ``diffusers.LTXConditionPipeline`` (0.9.5 and newer).

The condition pipeline takes the first frame as a condition at frame 0 and, for
``last_image``, a second condition at the clip's last frame.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from openi2v.engines.diffusion import DiffusionEngine, generator, step_callback, to_uint8


class LTXEngine(DiffusionEngine):
    family = "ltx"

    def _open(self, dtype):
        from diffusers import LTXConditionPipeline

        # 1. Load the pipeline from a local diffusers directory (or the HF cache); speed-ups come next.
        return LTXConditionPipeline.from_pretrained(self.weights, dtype=dtype, local_files_only=True)

    def _sample(self, image: Image.Image, prompt: str, negative: str, cfg: float, seed: int, width: int,
                height: int, last: Image.Image | None, steps: int, step) -> np.ndarray:
        from diffusers.pipelines.ltx.pipeline_ltx_condition import LTXVideoCondition

        p = self.preset
        # 1. Conditions: the first frame at 0, the last image (if any) at the final frame.
        conditions = [LTXVideoCondition(image=image, frame_index=0)]
        if last is not None:
            conditions.append(LTXVideoCondition(image=last, frame_index=p.frames - 1))
        # 2. Run with seeded noise and a per-step callback; uint8 frames back.
        out = self.pipe(conditions=conditions, prompt=prompt, negative_prompt=negative or None, width=width,
                        height=height, num_frames=p.frames, frame_rate=p.fps, num_inference_steps=steps,
                        guidance_scale=cfg, generator=generator(seed), output_type="pt",
                        callback_on_step_end=step_callback(step), **p.extra)
        return to_uint8(out.frames[0])
