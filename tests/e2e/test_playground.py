"""The playground in a real browser: Debian's chromium, headless, driven by Playwright.

`make test` installs chromium when it is missing. Screenshots land in test-artifacts/.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page, expect, sync_playwright

from openi2v.config import KLING_MODEL
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
# Every CSP violation in any frame becomes a console error the tests can see (injected by the
# browser driver before any script of the page, which cannot stop it).
REPORT_CSP = """document.addEventListener("securitypolicyviolation",
  (e) => console.error(`CSP violation: ${e.violatedDirective} ${e.blockedURI}`));"""
MARK = "pwned-by-upload"
# What an attacker uploads: were it run on our origin, it would read the stored API key.
EVIL = {
    "evil.html": f"""<!doctype html><title>inert</title><script>
document.title = "{MARK}"; localStorage.setItem("{MARK}", localStorage.getItem("openi2v.apiKey") || "-");
fetch("/healthz?{MARK}");</script>""".encode(),
    "evil.svg": f"""<svg xmlns="http://www.w3.org/2000/svg"><script>
document.title = "{MARK}"; localStorage.setItem("{MARK}", "-"); fetch("/healthz?{MARK}");</script></svg>""".encode(),
}


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
    """The playground, which must work under its CSP: any violation fails the test using it."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    violations = watch_csp(pg)
    pg.goto(f"{server.url}/playground")
    yield pg
    context.close()
    assert violations == [], "the playground broke its own Content-Security-Policy"


def watch_csp(pg: Page) -> list[str]:
    """The CSP violations this page reports, in any of its frames, from now on."""
    pg.add_init_script(REPORT_CSP)
    seen: list[str] = []
    pg.on("console", lambda m: seen.append(m.text) if "Content Security Policy" in m.text or "CSP" in m.text else None)
    return seen


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

    # A function, not an expression: Playwright evaluates an expression with eval, which the CSP refuses.
    page.wait_for_function("() => document.getElementById('video').readyState >= 2", timeout=WAIT_MS)
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


def test_a_test_key_and_its_simulated_failure_are_labelled(page, server, tmp_path):
    enter_key(page, server.new_key(5.0, scenario="failing"))
    expect(page.locator("#scenario")).to_be_visible()
    expect(page.locator("#scenario")).to_contain_text("scenario “failing”")
    page.get_by_label("Image", exact=True).set_input_files(picture(tmp_path, 1200, 800, "photo.png"))
    page.get_by_label("Prompt", exact=True).fill("pan left")
    page.get_by_role("button", name="Generate").click()
    expect(page.locator("#status .state")).to_have_text("failed", timeout=WAIT_MS)
    expect(page.locator("#status")).to_contain_text("simulated failure (scenario)")
    expect(page.locator("#status .simulated")).to_have_text("Simulated by a scenario: not a real outcome.")
    expect(page.locator("#quote")).to_contain_text("Balance $5.00")  # a failure costs nothing
    enter_key(page, server.new_key(5.0))
    expect(page.locator("#scenario")).to_be_hidden()  # a real key: no label


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


def test_the_playground_refuses_inline_script_eval_and_frames(browser, server):
    context = browser.new_context()
    pg = context.new_page()
    violations = watch_csp(pg)
    pg.goto(f"{server.url}/")
    pg.evaluate("""() => {
        const s = document.createElement("script"); s.textContent = "window.inlineRan = true"; document.body.append(s);
        setTimeout("window.evalRan = true", 0);  // a string of code: evaluated, so refused
        const f = document.createElement("iframe"); f.src = "/healthz"; document.body.append(f);
    }""")
    expect_soon(pg, lambda: len(violations) >= 3, violations)
    assert pg.evaluate("[window.inlineRan, window.evalRan]") == [None, None]
    assert any("script-src" in v for v in violations) and any("frame-src" in v for v in violations), violations
    context.close()


@pytest.mark.parametrize("name", sorted(EVIL))
def test_an_uploaded_page_never_runs_on_our_origin(browser, server, name):
    key = server.new_key(1.0)
    url = upload(server, key, name, EVIL[name])
    context = browser.new_context()
    pg = context.new_page()
    pg.add_init_script(f"localStorage.setItem('openi2v.apiKey', '{key}')")  # a signed-in user
    requests, downloads = [], []
    context.on("request", lambda r: requests.append(r.url))
    pg.on("download", lambda d: downloads.append(d.suggested_filename))

    try:
        pg.goto(url)  # opened directly
        titles = [pg.title()]
    except PlaywrightError as exc:  # the navigation became a download: saved, never shown
        assert "Download is starting" in exc.message
        titles = []
    # Framed by a page of our own origin that has no CSP of its own (the playground's would refuse the frame).
    pg.route(f"{server.url}/frame-test", lambda route: route.fulfill(
        content_type="text/html", body=f'<!doctype html><title>frame test</title><iframe src="{url}"></iframe>'))
    pg.goto(f"{server.url}/frame-test")
    titles += [f.evaluate("() => document.title") for f in pg.frames]
    pg.goto(f"{server.url}/playground")

    assert MARK not in " ".join(titles)
    assert pg.evaluate(f"() => localStorage.getItem('{MARK}')") is None
    assert [u for u in requests if MARK in u] == []
    expect_soon(pg, lambda: len(downloads) == 2, downloads)
    assert downloads == [name, name]  # both were this very file, served (not a 404), as a download
    context.close()


def test_media_opened_directly_still_show_under_their_sandbox(browser, server):
    key = server.new_key(1.0)
    photo = pictures.png(1200, 800)
    video_url = render(server, key, upload(server, key, "photo.html", photo))
    context = browser.new_context()
    pg = context.new_page()
    violations = watch_csp(pg)
    statuses = []
    pg.on("response", lambda r: statuses.append(r.status) if r.url == video_url else None)

    response = pg.goto(video_url)
    assert "sandbox" in response.headers["content-security-policy"]
    # Played, or refused (a blocked load leaves it with no source): the assertion says which.
    pg.wait_for_function("() => { const v = document.querySelector('video');"
                         " return v && (v.readyState >= 2 || v.networkState === v.NETWORK_NO_SOURCE); }", timeout=WAIT_MS)
    assert pg.evaluate("document.querySelector('video').readyState") >= 2, violations
    assert abs(pg.evaluate("document.querySelector('video').duration") - 5.0) <= 0.1
    assert 206 in statuses  # the browser read it in ranges
    pg.goto(upload(server, key, "photo.html", photo))  # a PNG under an HTML name: still shown as a PNG
    pg.wait_for_function("() => document.querySelector('img') && document.querySelector('img').complete",
                         timeout=WAIT_MS)
    assert pg.evaluate("document.querySelector('img').naturalWidth") == 1200
    assert violations == []
    context.close()


def upload(server, key: str, name: str, data: bytes) -> str:
    r = httpx.post(f"{server.url}/api/v3/media/upload/binary", files={"file": (name, data, "text/html")},
                   headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200, r.text
    return r.json()["data"]["download_url"]


def render(server, key: str, image_url: str) -> str:
    """The output URL of a finished prediction; raises at the deadline."""
    h = {"Authorization": f"Bearer {key}"}
    r = httpx.post(f"{server.url}/api/v3/{KLING_MODEL}", json={"image": image_url, "prompt": "pan left"}, headers=h)
    pid = r.json()["data"]["id"]
    deadline = time.monotonic() + WAIT_MS / 1000
    while time.monotonic() < deadline:
        d = httpx.get(f"{server.url}/api/v3/predictions/{pid}/result", headers=h).json()["data"]
        if d["status"] not in ("created", "processing"):
            assert d["status"] == "completed", d
            return d["outputs"][0]
        time.sleep(0.2)
    raise AssertionError(f"prediction {pid} did not finish in {WAIT_MS} ms")


def expect_soon(pg: Page, condition, seen) -> None:
    """Wait for what the browser reports (its events arrive only while Playwright waits); raise at the deadline."""
    deadline = time.monotonic() + 10
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reported: {seen}")
        pg.wait_for_timeout(50)


def test_cancel_a_running_prediction_from_the_playground(browser, tmp_path):
    """A render that holds mid-way (the gated test engine, never let through) is stopped with Cancel."""
    gated = Server(tmp_path / "gated", workers=1, GATED_ENGINE_GATE=str(tmp_path / "never-opened"),
                   OPENI2V_ENGINES=json.dumps({KLING_MODEL: "tests.engine_fixtures:Gated"})).start()
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        violations = watch_csp(page)
        page.goto(f"{gated.url}/playground")
        enter_key(page, gated.new_key(5.0))
        page.get_by_label("Image", exact=True).set_input_files(picture(tmp_path, 1200, 800, "photo.png"))
        page.get_by_label("Prompt", exact=True).fill("pan left")
        page.get_by_role("button", name="Generate").click()
        expect(page.locator("#status .state")).to_have_text("processing", timeout=WAIT_MS)
        page.get_by_role("button", name="Cancel").click()
        expect(page.locator("#status .state")).to_have_text("cancelled", timeout=WAIT_MS)
        expect(page.locator("#status")).to_contain_text("nothing was charged")
        expect(page.get_by_role("button", name="Cancel")).to_have_count(0)
        expect(page.locator("#quote")).to_contain_text("Balance $5.00")  # the held quote is released
        expect(page.locator("#history .badge")).to_have_text("cancelled")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "playground-cancelled.png"), full_page=True)
        assert violations == []
    finally:
        context.close()
        gated.stop()
