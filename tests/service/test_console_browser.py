"""The console in a real browser: Debian's Chromium driven by Playwright against a real
``siamkit serve`` on loopback.

- an admin signs in, enrols an identity with two images, verifies a probe, identifies it,
  reports a false accept from the result, accepts it in the review queue, sees the finetune
  command, the model card and the health charts, and deletes the identity (screenshots of
  each page are written: ``SIAMKIT_CONSOLE_SCREENSHOTS=docs/images/console`` puts them
  where the docs take them from);
- a read key sees but is refused every change (by the server: 403, shown on the page);
- a console API request without a key gets 401;
- accessibility: axe-core (the copy shipped in the ``axe-playwright-python`` wheel, injected
  by the test only) finds no violation on any page, every form field has a label, and the
  console works from the keyboard alone.

Skipped, with the reason, without Playwright's Python client or a Chromium binary
(``.ci/run`` installs both from the package registries; no browser is downloaded).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

sync_api = pytest.importorskip("playwright.sync_api", reason="the console's browser tests need Playwright (pip install 'siamkit[console-test]')")
httpx = pytest.importorskip("httpx")

from PIL import Image  # noqa: E402

from siamkit.service import KeyStore  # noqa: E402

from .test_service import build_model  # noqa: E402
from .test_service_e2e import Server, free_port  # noqa: E402


def chromium_path() -> str | None:
    """Chromium from ``SIAMKIT_CHROMIUM`` or the PATH (Debian: ``apt-get install chromium``)."""
    given = os.environ.get("SIAMKIT_CHROMIUM")
    if given:
        return given if Path(given).is_file() else None
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


CHROMIUM = chromium_path()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium binary (apt-get install chromium, or set SIAMKIT_CHROMIUM)")


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Handwritten characters of the shipped Omniglot (28 x 28, the test model's input)."""
    from siamkit.data.omniglot_compact import load_omniglot_compact

    ds = load_omniglot_compact("evaluation")
    root = tmp_path_factory.mktemp("console-images")
    out = {}
    for name, index in {"alice1": 0, "alice2": 1, "bob1": 40, "bob2": 41, "carol1": 80, "stranger": 300}.items():
        out[name] = root / f"{name}.png"
        Image.fromarray(ds.images[index, 0].numpy(), "L").save(out[name])
    return out


class ServerIn(Server):
    """:class:`Server`, started in the folder ``cwd``."""

    def __init__(self, cwd: Path, args: list[str], env: dict[str, str], port: int, log: Path) -> None:
        self.port, self.url, self.log = port, f"http://127.0.0.1:{port}", log
        self._logf = open(log, "wb")
        self.proc = subprocess.Popen(args, env=env, cwd=cwd, stdout=self._logf, stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("console-serve")
    given = os.environ.get("SIAMKIT_CONSOLE_MODEL")  # another model folder (RUN/model: its run is copied too)
    if given:
        shutil.copytree(Path(given).resolve().parent, root / "run")
        model = root / "run" / Path(given).name
    else:
        model = build_model(root / "model")
    ks = KeyStore()
    keys = {"read": ks.add("reader", "read"), "admin": ks.add("boss", "admin")}
    ks.save(root / "keys.json")
    port = free_port()
    # run in the folder with relative paths: what the pages show (the finetune command) names no machine path
    args = [sys.executable, "-m", "siamkit.cli", "serve", "--model", str(model.relative_to(root)), "--keys", "keys.json",
            "--gallery", "gallery.db", "--port", str(port), "--log-level", "warning", "--torch-threads", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(str(Path(p).resolve()) for p in env.get("PYTHONPATH", "").split(os.pathsep) if p)
    s = ServerIn(root, args, env, port, root / "serve.log")
    try:
        s.wait_ready()
        yield {"url": s.url, "model": str(model.relative_to(root)), **keys}
    finally:
        s.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1200, "height": 860}, locale="en-GB", timezone_id="UTC")
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.set_default_timeout(20_000)
    yield pg
    ctx.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    given = os.environ.get("SIAMKIT_CONSOLE_SCREENSHOTS")
    out = Path(given) if given else tmp_path_factory.mktemp("console-shots")
    out.mkdir(parents=True, exist_ok=True)
    return out


# --------------------------------------------------------------------------- helpers


def axe_violations(page: Any) -> list[str]:
    """axe-core's violations on the page as it is now (every rule axe runs by default)."""
    axe = pytest.importorskip("axe_playwright_python.sync_playwright", reason="the accessibility check needs axe-playwright-python")
    res = axe.Axe().run(page)
    return [f"{v['id']} ({v['impact']}): {[n['target'] for n in v['nodes']][:5]}" for v in res.response["violations"]]


def unlabelled_fields(page: Any) -> list[str]:
    """Visible form fields without an accessible name (a label, aria-label or aria-labelledby)."""
    return page.evaluate("""() => [...document.querySelectorAll('input, select, textarea, button')]
        .filter(el => el.offsetParent !== null && el.type !== 'hidden')
        .filter(el => {
            if (el.tagName === 'BUTTON') return !(el.textContent.trim() || el.getAttribute('aria-label'));
            return !((el.labels && el.labels.length) || el.getAttribute('aria-label') || el.getAttribute('aria-labelledby'));
        }).map(el => el.outerHTML.slice(0, 80))""")


def check_accessible(page: Any, where: str) -> None:
    assert unlabelled_fields(page) == [], where
    assert axe_violations(page) == [], where


def sign_in(page: Any, url: str, key: str) -> None:
    page.goto(url + "/console")
    page.get_by_label("API key").fill(key)
    page.get_by_label("API key").press("Enter")
    page.locator("#who-text").wait_for(state="visible")


def go(page: Any, name: str) -> None:
    page.get_by_role("link", name=name, exact=True).click()
    page.get_by_role("heading", name=name, level=1).wait_for(state="visible")


def status_is(page: Any, text: str) -> None:
    sync_api.expect(page.locator("#status")).to_contain_text(text)


def thumbs_loaded(page: Any, selector: str) -> int:
    page.wait_for_function(
        f"() => [...document.querySelectorAll('{selector}')].length > 0 && "
        f"[...document.querySelectorAll('{selector}')].every(i => i.complete && i.naturalWidth > 0)"
    )
    return int(page.evaluate(f"() => document.querySelectorAll('{selector}').length"))


def api_from_page(page: Any, method: str, path: str, key: str | None = None, body: Any = None) -> int:
    """The status of a request the page makes with the key it holds (or ``key``; '' = none)."""
    return int(page.evaluate(
        """async ([method, path, key, body]) => {
            const k = key === null ? sessionStorage.getItem('siamkit.console.key') : key;
            const headers = k ? {'X-API-Key': k} : {};
            let data = null;
            if (body !== null) { headers['Content-Type'] = 'application/json'; data = JSON.stringify(body); }
            return (await fetch(path, {method, headers, body: data})).status;
        }""",
        [method, path, key, body],
    ))


# --------------------------------------------------------------------------- the flows


def test_admin_flow(page: Any, server: dict[str, Any], images: dict[str, Path], shots: Path) -> None:
    url = server["url"]
    page.goto(url + "/console")
    sync_api.expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    check_accessible(page, "sign in")
    page.screenshot(path=str(shots / "signin.png"))
    sign_in(page, url, server["admin"])
    assert server["admin"] not in page.url
    assert page.evaluate("() => sessionStorage.getItem('siamkit.console.key')") == server["admin"]
    assert page.evaluate("() => document.cookie") == "" and page.evaluate("() => localStorage.length") == 0
    sync_api.expect(page.locator("#who-text")).to_have_text("boss (admin key)")

    # enrol alice with two images, bob and carol too
    go(page, "Gallery")
    for name, files in {"alice": ["alice1", "alice2"], "bob": ["bob1", "bob2"], "carol": ["carol1"]}.items():
        page.get_by_label("Name", exact=True).fill(name)
        page.get_by_label("Images (one or more)").set_input_files([str(images[f]) for f in files])
        page.get_by_role("button", name="Enrol", exact=True).click()
        status_is(page, f"Enrolled {name} with {len(files)} sample")
    sync_api.expect(page.locator("#gallery-count")).to_have_text("3 identities enrolled")
    page.get_by_role("button", name="Open carol").click()
    page.get_by_label("More images of this identity").set_input_files(str(images["stranger"]))
    page.get_by_role("button", name="Add samples").click()
    sync_api.expect(page.locator("#gallery-detail")).to_contain_text("Samples2")
    assert thumbs_loaded(page, "#gallery-detail img.thumb") == 2
    page.get_by_label("Search by name").fill("ali")
    sync_api.expect(page.locator("#gallery-list tbody tr")).to_have_count(1)
    page.get_by_role("button", name="Open alice").click()
    assert thumbs_loaded(page, "#gallery-detail img.thumb") == 2
    check_accessible(page, "gallery")
    page.screenshot(path=str(shots / "gallery.png"), full_page=True)

    # verify a probe against alice: the same drawing -> "same"; report it as a false accept
    go(page, "Verify")
    page.get_by_label("an image with an enrolled identity").check()
    page.get_by_label("Image", exact=True).set_input_files(str(images["alice1"]))
    page.get_by_label("Enrolled identity", exact=True).fill("alice")
    page.get_by_role("button", name="Verify", exact=True).click()
    result = page.locator("#verify-result")
    sync_api.expect(result).to_contain_text("Decision: this is alice")
    for fact in ("Score", "Confidence", "Threshold", "the model's calibration, fitted on '"):
        sync_api.expect(result).to_contain_text(fact)
    check_accessible(page, "verify result")
    page.screenshot(path=str(shots / "verify.png"), full_page=True)
    page.get_by_role("button", name="Wrong: these are different (false accept)").click()
    sync_api.expect(result).to_contain_text("Reported as feedback #1")

    # two images
    page.get_by_label("two images").check()
    page.get_by_label("Image", exact=True).set_input_files(str(images["bob1"]))
    page.get_by_label("Second image").set_input_files(str(images["bob1"]))
    page.get_by_role("button", name="Verify", exact=True).click()
    sync_api.expect(result).to_contain_text("Decision: same")

    # identify: top-k with thumbnails; report a false accept (it is nobody enrolled)
    go(page, "Identify")
    page.get_by_label("Probe image").set_input_files(str(images["alice2"]))
    page.get_by_label("Candidates (k)").fill("3")
    page.get_by_role("button", name="Identify", exact=True).click()
    res = page.locator("#identify-result")
    sync_api.expect(res).to_contain_text("Decision: identified: alice")
    sync_api.expect(res.locator("tbody tr")).to_have_count(3)
    assert thumbs_loaded(page, "#identify-result img.thumb") == 3
    check_accessible(page, "identify result")
    page.screenshot(path=str(shots / "identify.png"), full_page=True)
    page.get_by_label("Who is it really? (unknown: not enrolled)").fill("unknown")
    page.get_by_role("button", name="Wrong: this is not alice (false accept)").click()
    sync_api.expect(res).to_contain_text("Reported as feedback #2")

    # the review queue: accept report 1, see the finetune command
    go(page, "Feedback")
    rows = page.locator("#queue tbody tr")
    sync_api.expect(rows).to_have_count(2)
    sync_api.expect(rows.first).to_contain_text("waiting (1/2)")
    assert thumbs_loaded(page, "#queue img.thumb") == 2
    page.get_by_role("button", name="Accept report 1").click()
    status_is(page, "Report #1 accepted")
    sync_api.expect(rows.first).to_contain_text("accepted by boss")
    page.get_by_role("button", name="Show the fine-tune command").click()
    sync_api.expect(page.locator("#finetune-command")).to_contain_text("siamkit finetune --model")
    sync_api.expect(page.locator("#finetune-command")).to_have_text(
        f"siamkit finetune --model {server['model']} --feedback gallery.db.feedback.sqlite --gallery gallery.db "
        f"--out {server['model']}-finetuned --min-reporters 2 --replay TRAINING_DATA")
    check_accessible(page, "feedback")
    page.screenshot(path=str(shots / "feedback.png"), full_page=True)

    # the model card and the shift check (3 identities: impostor pairs exist)
    go(page, "Model")
    sync_api.expect(page.locator("#model-card")).to_contain_text("Decision thresholds")
    sync_api.expect(page.locator("#model-card")).to_contain_text("encoder")
    sync_api.expect(page.locator("#shift")).to_contain_text("omain shift")
    sync_api.expect(page.locator("#shift")).to_contain_text("12 now")  # impostor pairs of 6 samples of 3 identities
    check_accessible(page, "model")
    page.screenshot(path=str(shots / "model.png"), full_page=True)

    # health charts from /metrics
    go(page, "Health")
    page.wait_for_function("() => document.querySelectorAll('#health-charts svg').length >= 5")
    sync_api.expect(page.locator("#health-summary")).to_contain_text("3 identities, 6 samples")
    sync_api.expect(page.locator("#health-charts")).to_contain_text("Decisions")
    check_accessible(page, "health")
    page.screenshot(path=str(shots / "health.png"), full_page=True)

    # delete alice (confirmed), then the audit log says who did what
    go(page, "Gallery")
    page.get_by_role("button", name="Open alice").click()
    page.once("dialog", lambda d: d.dismiss())
    page.get_by_role("button", name="Delete alice").click()  # dismissed: nothing happens
    sync_api.expect(page.locator("#gallery-list")).to_contain_text("alice")
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Delete alice").click()
    status_is(page, "Deleting alice: done")
    sync_api.expect(page.locator("#gallery-count")).to_have_text("2 identities enrolled")
    sync_api.expect(page.locator("#gallery-list")).not_to_contain_text("alice")
    page.get_by_role("button", name="Load the audit log").click()
    first = page.locator("#audit tbody tr").first
    sync_api.expect(first).to_contain_text("boss")
    sync_api.expect(first).to_contain_text("delete")
    with httpx.Client(base_url=url) as c:
        assert c.get("/v1/identities/alice", headers={"X-API-Key": server["read"]}).status_code == 404

    page.get_by_role("button", name="Sign out").click()
    sync_api.expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert page.evaluate("() => sessionStorage.getItem('siamkit.console.key')") is None


def test_read_key_sees_but_cannot_change(page: Any, server: dict[str, Any], images: dict[str, Path]) -> None:
    url = server["url"]
    with httpx.Client(base_url=url) as c:  # someone to look at
        files = [("images", ("d.png", images["carol1"].read_bytes(), "image/png"))]
        c.post("/v1/identities", data={"identity": "dave"}, files=files, headers={"X-API-Key": server["admin"]})
    sign_in(page, url, server["read"])
    sync_api.expect(page.locator("#who-text")).to_have_text("reader (read key)")

    go(page, "Gallery")
    sync_api.expect(page.locator("#enrol-form")).to_be_hidden()
    sync_api.expect(page.get_by_text("Enrolling needs an admin key.")).to_be_visible()
    page.get_by_role("button", name="Open dave").click()
    assert thumbs_loaded(page, "#gallery-detail img.thumb") == 1  # reading is allowed
    sync_api.expect(page.get_by_role("button", name="Delete dave")).to_be_hidden()
    check_accessible(page, "gallery, read key")

    # verify works; reporting the answer is refused by the server (403) and the page says so
    go(page, "Verify")
    page.get_by_label("Image", exact=True).set_input_files(str(images["stranger"]))
    page.get_by_label("Second image").set_input_files(str(images["stranger"]))
    page.get_by_role("button", name="Verify", exact=True).click()
    sync_api.expect(page.locator("#verify-result")).to_contain_text("Decision: same")
    page.get_by_role("button", name="Wrong: these are different (false accept)").click()
    sync_api.expect(page.locator("#alert")).to_contain_text("refused (403 forbidden)")

    go(page, "Feedback")
    sync_api.expect(page.locator("#queue")).to_contain_text("Sign in with an admin key")

    # the same calls the admin flow made, with this key: all refused, nothing changed
    for method, path, body in [
        ("DELETE", "/v1/identities/dave", None), ("POST", "/v1/feedback/1/review", {"accept": True}),
        ("GET", "/v1/feedback/queue", None), ("GET", "/v1/audit", None), ("GET", "/v1/feedback/finetune-command", None),
        ("GET", "/v1/feedback/1/thumbnail/a", None),
    ]:
        assert api_from_page(page, method, path, body=body) == 403, path
    enrol = page.evaluate("""async () => {
        const fd = new FormData(); fd.append('identity', 'eve');
        fd.append('images', new Blob([new Uint8Array([137, 80, 78, 71])], {type: 'image/png'}), 'e.png');
        return (await fetch('/v1/identities', {method: 'POST', body: fd,
            headers: {'X-API-Key': sessionStorage.getItem('siamkit.console.key')}})).status; }""")
    assert enrol == 403
    with httpx.Client(base_url=url) as c:
        names = [i["identity"] for i in c.get("/v1/identities", headers={"X-API-Key": server["read"]}).json()["identities"]]
    assert "dave" in names and "eve" not in names


def test_console_requests_without_a_key_get_401(page: Any, server: dict[str, Any]) -> None:
    url = server["url"]
    page.goto(url + "/console")
    for path in ("/v1/whoami", "/v1/model", "/v1/model/shift", "/v1/audit", "/v1/feedback/queue", "/v1/identities"):
        assert api_from_page(page, "GET", path, key="") == 401, path
    assert api_from_page(page, "POST", "/v1/feedback/1/review", key="", body={"accept": True}) == 401
    # a wrong key is refused at sign-in, and nothing is kept
    page.get_by_label("API key").fill("sk_00000000_" + "x" * 43)
    page.get_by_role("button", name="Sign in").click()
    sync_api.expect(page.locator("#alert")).to_contain_text("401")
    assert page.evaluate("() => sessionStorage.getItem('siamkit.console.key')") is None
    sync_api.expect(page.locator("#nav")).to_be_hidden()


def test_keyboard_only(page: Any, server: dict[str, Any]) -> None:
    url = server["url"]
    page.goto(url + "/console")
    page.wait_for_function("() => document.activeElement && document.activeElement.id === 'signin-key'")
    page.keyboard.type(server["read"])
    page.keyboard.press("Enter")
    page.locator("#who-text").wait_for(state="visible")
    assert page.evaluate("() => document.activeElement.id") == "h-verify"  # focus moves to the page's heading
    back = []  # backwards from the heading: the header's controls, then the skip link
    for _ in range(12):
        page.keyboard.press("Shift+Tab")
        back.append(page.evaluate("() => document.activeElement.textContent.trim()"))
        if back[-1] == "Skip to content":
            break
    assert back == ["Sign out", "Health", "Model", "Feedback", "Gallery", "Identify", "Verify", "Skip to content"], back
    outline = page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"  # focus is visible
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.textContent") == "Identify"
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.activeElement.id === 'h-identify'")
    assert page.url.endswith("#identify")
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.id") == "identify-image"
