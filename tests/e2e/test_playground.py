"""The playground in a real browser: Debian's chromium, headless, driven by Playwright.

`make test` installs chromium when it is missing. Screenshots land in test-artifacts/.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from tests import pictures
from tests.e2e.server import Server

pytestmark = pytest.mark.e2e

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM = os.environ.get("OPENI2V_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# What a sandboxed, offline machine needs: no sandbox (root), no GPU, and none of
# chromium's own background connections (refused here, and slow to fail).
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--autoplay-policy=no-user-gesture-required"]
WAIT_MS = 180_000  # a guard against a hang, not a speed limit


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("playground"), workers=1).start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def browser():
    assert Path(CHROMIUM).exists(), f"chromium not found at {CHROMIUM}: `make test` installs it (apt-get install chromium)"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    pg.goto(f"{server.url}/playground")
    yield pg
    context.close()


def enter_key(page: Page, key: str) -> None:
    page.get_by_label("API key", exact=True).fill(key)
    page.get_by_label("API key", exact=True).press("Tab")  # change event: saved, price and balance fetched


def picture(tmp_path: Path, w: int, h: int, name: str) -> Path:
    path = tmp_path / name
    path.write_bytes(pictures.png(w, h))
    return path


def test_generate_a_video_in_the_browser(page, server, tmp_path):
    ARTIFACTS.mkdir(exist_ok=True)
    key = server.new_key(5.0)
    enter_key(page, key)
    expect(page.locator("#quote")).to_contain_text("Price $0.35 for 5 s")
    expect(page.locator("#quote")).to_contain_text("Balance $5.00")

    page.get_by_label("Image", exact=True).set_input_files(picture(tmp_path, 1200, 800, "photo.png"))
    expect(page.locator("#preview")).to_be_visible()
    page.get_by_label("Prompt", exact=True).fill("slow push in, then pan right")
    page.get_by_label("Negative prompt", exact=True).fill("shaky")
    page.get_by_label("Duration", exact=True).select_option("5")
    page.get_by_label("Seed", exact=True).fill("42")
    page.get_by_role("button", name="Generate").click()

    page.wait_for_function("document.getElementById('video').readyState >= 2", timeout=WAIT_MS)
    duration = page.evaluate("document.getElementById('video').duration")
    assert abs(duration - 5.0) <= 0.1
    facts = page.locator("#facts")
    expect(facts).to_contain_text("slow zoom in → pan right")  # the camera plan read from the prompt
    expect(facts).to_contain_text("42")
    expect(facts).to_contain_text("$0.35")
    expect(page.get_by_role("link", name="Download MP4")).to_have_attribute("href", page.evaluate(
        "document.getElementById('video').src"))
    expect(page.locator("#quote")).to_contain_text("Balance $4.65")  # charged once, shown after
    expect(page.locator("#history li")).to_have_count(1)
    expect(page.locator("#history .badge")).to_have_text("completed")
    page.screenshot(path=str(ARTIFACTS / "playground-video.png"), full_page=True)


def test_size_error_is_shown_next_to_image(page, server, tmp_path):
    ARTIFACTS.mkdir(exist_ok=True)
    enter_key(page, server.new_key(5.0))
    page.get_by_label("Image", exact=True).set_input_files(picture(tmp_path, 200, 200, "tiny.png"))
    page.get_by_label("Prompt", exact=True).fill("zoom in")
    page.get_by_role("button", name="Generate").click()

    error = page.locator("#error-image")
    expect(error).to_contain_text("300")
    # next to "Image": in the same field as that label, and nowhere else
    assert page.evaluate("document.getElementById('error-image').closest('.field').querySelector('label').textContent"
                         ) == "Image"
    expect(page.locator("#error-form")).to_be_empty()
    expect(page.locator("#error-prompt")).to_be_empty()
    page.screenshot(path=str(ARTIFACTS / "playground-size-error.png"), full_page=True)


def test_every_control_is_reachable_by_keyboard(page, server):
    page.get_by_label("API key", exact=True).focus()
    seen = []
    for _ in range(15):
        page.keyboard.press("Tab")
        seen.append(page.evaluate("document.activeElement.id"))
    for control in ("image", "prompt", "negative-prompt", "guidance-scale", "duration", "seed", "roll", "generate"):
        assert control in seen
    page.get_by_label("Guidance scale", exact=True).focus()
    page.keyboard.press("ArrowRight")
    expect(page.locator("#guidance-value")).to_have_text("0.51")
    page.get_by_role("button", name="Roll a random seed").press("Enter")
    assert page.get_by_label("Seed", exact=True).input_value().isdigit()


def test_fits_a_phone(browser, server):
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    pg = context.new_page()
    pg.goto(f"{server.url}/")
    assert pg.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    for label in ("API key", "Image", "Prompt", "Negative prompt", "Guidance scale", "Duration", "Seed"):
        assert pg.get_by_label(label, exact=True).count() == 1
    generate = pg.get_by_role("button", name="Generate")
    generate.scroll_into_view_if_needed()
    expect(generate).to_be_visible()
    ARTIFACTS.mkdir(exist_ok=True)
    pg.screenshot(path=str(ARTIFACTS / "playground-phone.png"), full_page=True)
    context.close()


def test_page_loads_nothing_from_outside(browser, server):
    context = browser.new_context()
    pg = context.new_page()
    outside = []
    pg.on("request", lambda r: outside.append(r.url) if not r.url.startswith((server.url, "data:")) else None)
    pg.goto(f"{server.url}/")
    pg.wait_for_load_state("networkidle")
    assert outside == []
    context.close()
