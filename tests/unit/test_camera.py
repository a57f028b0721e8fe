import pytest

from openi2v.engines.camera import plan_camera


@pytest.mark.parametrize("prompt,steps", [
    ("slow push in, then pan right", ["slow zoom in", "pan right"]),
    ("First zoom out, then tilt up, finally orbit left", ["zoom out", "tilt up", "orbit left"]),
    ("Camera trucks right past the cars", ["pan right"]),
    ("crane down to the street", ["tilt down"]),
    ("pedestal up", ["tilt up"]),
    ("the camera rolls counter-clockwise", ["roll counter-clockwise"]),
    ("roll clockwise", ["roll clockwise"]),
    ("arc right around the statue", ["orbit right"]),
    ("a vertigo dolly zoom on her face", ["dolly zoom"]),
    ("handheld shot of the market", ["handheld"]),
    ("locked-off shot of a lake at dawn", ["static"]),
    ("quick zoom in and pan left", ["fast zoom in + pan left"]),
    ("pull back slowly to reveal the city", ["slow zoom out"]),
])
def test_camera_language(prompt, steps):
    assert plan_camera(prompt).describe() == steps


def test_negative_prompt_removes_moves():
    plan = plan_camera("zoom in and pan left, handheld", negative_prompt="zoom, shaky")
    assert plan.describe() == ["pan left"]
    assert plan.removed == ["shake", "zoom"]


def test_no_camera_words_gives_a_subtle_seed_chosen_move():
    plans = {tuple(plan_camera("a cat asleep on a sofa", seed=s).describe()) for s in range(30)}
    assert all(p[0].startswith("slow ") for p in plans)
    assert len(plans) > 1
    assert plan_camera("a cat", seed=7).describe() == plan_camera("a cat", seed=7).describe()


def test_guidance_sets_drift_and_static_has_none():
    assert plan_camera("zoom in", guidance_scale=1.0).drift == 0
    assert plan_camera("zoom in", guidance_scale=0.25).drift == pytest.approx(0.75)
    assert plan_camera("static shot", guidance_scale=0.0).drift == 0
