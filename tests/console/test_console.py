"""The web console in real headless Chromium (Debian's) against a real fleet: Redis, the
admin, three replicas and the mock upstreams, as `configbus up` starts them.

The tests run in order on one fleet, like a person's session: log in, a typo refused at its
path, the fix converging, a diff, a canary aborted by its guard, an SRE's rollback, a
viewer refused. Each page is screenshotted under the pytest tmp dir;
CONFIGBUS_UPDATE_DOCS=1 also refreshes the PNGs of docs/.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from configbus.connection import connect
from configbus.keystore import KeyStore
from configbus.tooling.fleet import Fleet, start_fleet
from tests.support import ROOT, wait_for

sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make test does it)"),
]

VIEWER, SRE = "viewer-token-0123456789", "sre-token-0123456789"
XSS = "<img src=x onerror=alert(1)>"
WAIT_MS = 20_000


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    saved = dict(os.environ)
    for k in [k for k in os.environ if k.startswith("CONFIGBUS_")]:
        del os.environ[k]  # never the developer's Redis: start_fleet starts its own
    os.environ["CONFIGBUS_RECONCILE_INTERVAL_S"] = "0.5"
    try:
        f = start_fleet(
            replicas=3,
            port_base=0,
            run_dir=tmp_path_factory.mktemp("fleet"),
            tokens=[f"viewer:viewer:{VIEWER}", f"sre:sre:{SRE}"],
        )
    finally:
        os.environ.clear()
        os.environ.update(saved)
    try:
        yield f
    finally:
        f.stop()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("console-screenshots")


@pytest.fixture(scope="module")
def browser(fleet: Fleet) -> Iterator[Any]:  # the fleet first: its seed runs asyncio
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


def _context(browser: Any, width: int = 1280, height: int = 800) -> Any:
    ctx = browser.new_context(viewport={"width": width, "height": height})

    def loopback_only(route: Any) -> None:
        host = urlsplit(route.request.url).hostname
        route.continue_() if host in ("127.0.0.1", "localhost") else route.abort()

    ctx.route("**/*", loopback_only)
    return ctx


@pytest.fixture(scope="module")
def admin_page(browser: Any, fleet: Fleet) -> Iterator[Any]:
    ctx = _context(browser)
    page = ctx.new_page()
    page.set_default_timeout(WAIT_MS)
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.dialogs = dialogs
    yield page
    ctx.close()


def admin_url(fleet: Fleet) -> str:
    return fleet.child("admin").url


def api(fleet: Fleet, path: str) -> Any:
    r = httpx.get(
        f"{admin_url(fleet)}/v1/namespaces/{fleet.namespace}{path}",
        headers={"Authorization": f"Bearer {fleet.admin_token}"},
    )
    r.raise_for_status()
    return r.json()


def login_with_token(page: Any, fleet: Fleet, token: str) -> None:
    page.goto(admin_url(fleet) + "/ui/")
    page.fill("#token", token)
    page.press("#token", "Enter")  # the keyboard is enough
    page.wait_for_selector("#nav a[href='#/overview']")


def test_one_time_login_link_then_overview(admin_page: Any, fleet: Fleet, shots: Path) -> None:
    page = admin_page
    assert fleet.login_url.startswith(admin_url(fleet) + "/ui/login?code=")
    assert fleet.admin_token not in fleet.login_url
    resp = page.goto(fleet.login_url)
    assert resp is not None and urlsplit(page.url).query == ""  # the code left the URL
    page.wait_for_selector("#overview [data-replica]")
    cookies = {c["name"]: c for c in page.context.cookies()}
    assert cookies["cb_session"]["httpOnly"] and cookies["cb_session"]["sameSite"] == "Strict"
    assert not cookies["cb_csrf"]["httpOnly"]
    # Used once: the same link again lands on the login form.
    other = page.context.browser.new_context()
    p2 = other.new_page()
    p2.goto(fleet.login_url)
    p2.wait_for_selector("#login-form")
    assert "expired" in p2.inner_text("#login-msg")
    other.close()

    page.wait_for_selector("#converged[data-converged='true']")
    assert page.inner_text("#head-version") == "1"
    assert page.locator("[data-version='1'] [data-replica]").count() == 3
    canary = page.locator("[data-replica='replica-1']")
    assert "tier=canary" in canary.inner_text()
    headers = httpx.get(admin_url(fleet) + "/ui/").headers
    assert "script-src 'self'" in headers["content-security-policy"]
    assert "unsafe-inline" not in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"
    page.screenshot(path=shots / "overview-v1.png", full_page=True)


def test_typo_is_shown_at_its_path_and_publishes_nothing(admin_page: Any, fleet: Fleet) -> None:
    page = admin_page
    page.evaluate("window.__noReload = 1")
    page.click("#nav a[href='#/edit']")
    # (wait_for_function would need eval, which the console's CSP refuses: poll instead)
    wait_for(lambda: "chat-backup" in page.input_value("#editor"), what="head in the editor")
    text = page.input_value("#editor")
    typo = text.replace("fallbacks:\n      - chat-backup", "fallbacks:\n      - chat-backpu", 1)
    assert typo != text, text
    page.fill("#editor", typo)
    page.click("#publish")
    issue = page.locator("#issues li[data-path='models[0].fallbacks[0]']")
    issue.wait_for()
    assert "unknown model 'chat-backpu'" in issue.inner_text()
    assert "line" in issue.inner_text()
    assert api(fleet, "/replicas")["summary"]["head"] == 1  # nothing published


def test_fix_publishes_and_replicas_converge_live(
    admin_page: Any, fleet: Fleet, shots: Path
) -> None:
    page = admin_page
    text = page.input_value("#editor").replace("chat-backpu", "chat-backup")
    text = text.replace('change: "initial fleet"', 'change: "from the console"')
    text = text.replace("metadata:\n", f'metadata:\n  note: "{XSS}"\n', 1)
    page.fill("#editor", text)
    page.fill("#publish-message", f"fix the typo {XSS}")
    page.screenshot(path=shots / "edit.png", full_page=True)
    page.click("#publish")
    page.wait_for_selector("#edit-result .notice.ok")
    assert "Published version 2" in page.inner_text("#edit-result")
    page.click("#edit-result a[href='#/overview']")
    page.wait_for_selector("[data-version='2'] [data-replica]")
    applied = page.locator("[data-version='2'] [data-state='applied']")
    wait_for(lambda: applied.count() == 3, timeout=20, what="3 replicas applied version 2")
    page.wait_for_selector("#converged[data-converged='true']")
    assert page.evaluate("window.__noReload") == 1  # seen live, without a reload
    page.screenshot(path=shots / "overview.png", full_page=True)
    _docs(shots / "overview.png", "console-overview.png")


def test_diff_of_two_versions_and_values_render_as_text(
    admin_page: Any, fleet: Fleet, shots: Path
) -> None:
    page = admin_page
    page.click("#nav a[href='#/versions']")
    page.check("input[aria-label='A: version 1']")
    page.check("input[aria-label='B: version 2']")
    page.click("#diff-button")
    page.wait_for_selector("#diff-table tr.added, #diff-table tr.changed")
    changes = page.inner_text("#diff-changes")
    assert "metadata.note" in changes and "metadata.change" in changes
    assert XSS in page.inner_text("#diff-table")
    assert XSS in page.inner_text("#versions-table")  # the message, as text
    page.screenshot(path=shots / "versions-diff.png", full_page=True)
    page.goto(admin_url(fleet) + "/ui/#/versions?view=2")
    page.wait_for_selector("#version-yaml")
    assert XSS in page.inner_text("#version-yaml")
    assert page.locator("main img").count() == 0 and page.dialogs == []
    page.screenshot(path=shots / "version-view.png", full_page=True)


def _chat(url: str, key: str, n: int, stop: threading.Event) -> None:
    with httpx.Client(timeout=5) as c:
        for _ in range(n):
            if stop.is_set():
                return
            c.post(
                url + "/v1/chat/completions",
                headers={"Authorization": f"Bearer {key}"},
                json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]},
            )


def test_canary_of_a_broken_provider_aborts_by_itself(
    admin_page: Any, fleet: Fleet, shots: Path
) -> None:
    page = admin_page
    page.click("#nav a[href='#/rollouts']")
    page.wait_for_selector("#rollout-form")
    page.fill("#rollout-doc", (fleet.run_dir / "broken-provider.yaml").read_text())
    page.fill("#rollout-stages", "tier=canary 30\n100% 30")
    page.fill("#guard-min-requests", "10")
    page.fill("#rollout-message", "move mock-a")
    page.click("#start-rollout")
    page.wait_for_selector("#rollout-result .notice")
    assert "Rollout started" in page.inner_text("#rollout-result"), page.inner_text("main")
    running = page.locator("#rollout[data-state='running']")
    try:
        wait_for(lambda: running.count() == 1, timeout=20, what="the rollout shown running")
    except TimeoutError as exc:
        raise AssertionError(page.inner_text("main")) from exc
    stop = threading.Event()
    canary = fleet.child("replica-1").url
    wait_for(
        lambda: api(fleet, "/replicas")["replicas"][0]["staged"], timeout=10, what="canary staged"
    )
    load = threading.Thread(target=_chat, args=(canary, fleet.client_key, 60, stop))
    load.start()
    try:
        page.wait_for_selector("#guard-figures")
        page.wait_for_selector("#rollout[data-state='running'] #assessment")
        page.screenshot(path=shots / "rollout-running.png", full_page=True)
        page.wait_for_selector("#rollout[data-state='aborted']", timeout=40_000)
    finally:
        stop.set()
        load.join(10)
    reason = page.inner_text("#rollout-reason")
    assert "error rate" in reason, reason
    page.screenshot(path=shots / "rollout.png", full_page=True)
    _docs(shots / "rollout.png", "console-rollout.png")
    assert api(fleet, "/replicas")["summary"]["head"] == 2  # head never moved


def test_an_sre_rolls_back(browser: Any, fleet: Fleet, shots: Path) -> None:
    ctx = _context(browser)
    page = ctx.new_page()
    page.set_default_timeout(WAIT_MS)
    login_with_token(page, fleet, SRE)
    page.click("#nav a[href='#/edit']")
    page.wait_for_selector("#editor")
    assert page.is_disabled("#publish")  # sre may roll back, not publish
    page.click("#nav a[href='#/versions']")
    page.click("tr[data-version='1'] button")
    page.fill("#rollback-form input", "back to the seed")
    page.click("#rollback-form button[type='submit']")
    page.wait_for_selector("#version-action .notice.ok")
    head = api(fleet, "/replicas")["summary"]["head"]
    meta = api(fleet, f"/versions/{head}")
    assert (meta["kind"], meta["source"], meta["author"]) == ("rollback", 1, "sre")
    page.screenshot(path=shots / "versions-rollback.png", full_page=True)
    ctx.close()


def test_a_viewer_sees_writes_disabled_and_the_server_refuses_them(
    browser: Any, fleet: Fleet, shots: Path
) -> None:
    ctx = _context(browser, width=400, height=800)
    page = ctx.new_page()
    page.set_default_timeout(WAIT_MS)
    login_with_token(page, fleet, VIEWER)
    page.wait_for_selector("#overview [data-replica]")
    assert page.evaluate("document.documentElement.scrollWidth") <= 400  # readable at 400 px
    page.screenshot(path=shots / "overview-400px.png", full_page=True)
    page.click("#nav a[href='#/edit']")
    page.wait_for_selector("#editor")
    assert page.is_disabled("#publish") and page.is_disabled("#validate")
    refused = page.evaluate(
        """async () => {
            const csrf = document.cookie.match(/cb_csrf=([^;]+)/)[1];
            const r = await fetch('/v1/namespaces/default/rollback', {method: 'POST',
              headers: {'Content-Type': 'application/json', 'X-CSRF-Token': csrf},
              body: JSON.stringify({to_version: 1})});
            return [r.status, (await r.json()).error.code];
        }"""
    )
    assert refused == [403, "forbidden"]
    no_csrf = page.evaluate(
        """async () => (await fetch('/v1/namespaces/default/validate', {method: 'POST',
              headers: {'Content-Type': 'application/json'}, body: '{"document": {}}'})).status"""
    )
    assert no_csrf == 403
    page.click("#nav a[href='#/keys']")
    page.wait_for_selector("#keys-count")
    assert page.is_disabled("#create-key")
    refused = page.evaluate(
        """async () => {
            const csrf = document.cookie.match(/cb_csrf=([^;]+)/)[1];
            const r = await fetch('/v1/namespaces/default/keys', {method: 'POST',
              headers: {'Content-Type': 'application/json', 'X-CSRF-Token': csrf},
              body: JSON.stringify({name: 'sneaky'})});
            return r.status;
        }"""
    )
    assert refused == 403
    page.click("#nav a[href='#/audit']")
    page.wait_for_selector("#audit-table tr[data-action]")
    page.select_option("#filter-outcome", "forbidden")
    rows = page.locator("#audit-table tbody tr")
    assert rows.count() >= 1 and "viewer" in rows.first.inner_text()
    ctx.close()


def _seed_keys(fleet: Fleet, n: int) -> None:
    """`n` keys straight into the collection (the admin API would pace them: a write limit
    per token), in a thread: the browser's sync API owns this one's event loop."""

    async def seed() -> None:
        ks = KeyStore(connect(fleet.redis_url), fleet.namespace)
        for i in range(n):
            await ks.create(name=f"bulk-{i:02d}", team="bulk")
        await ks.redis.aclose()

    t = threading.Thread(target=asyncio.run, args=(seed(),))
    t.start()
    t.join(30)


def test_keys_page_creates_a_key_shown_once_rotates_and_revokes(
    admin_page: Any, fleet: Fleet, shots: Path
) -> None:
    page = admin_page
    _seed_keys(fleet, 60)
    page.click("#nav a[href='#/keys']")
    page.wait_for_selector("#keys-table")
    # Pages of 50: the second holds the rest.
    assert page.locator("#keys-table tbody tr").count() == 50
    page.click("#keys-next")
    wait_for(lambda: page.locator("#keys-table tbody tr").count() == 10, what="page 2")
    page.fill("#key-name", "console-key")
    page.fill("#key-team", "web")
    page.fill("#key-tags", f"ui,{XSS}")
    page.click("#create-key")
    page.wait_for_selector("#new-key")
    key = page.input_value("#new-key")
    assert key.startswith("sk-cb-")
    page.fill("#keys-team", "web")  # 61 keys: find it by its team
    page.press("#keys-team", "Enter")
    row = page.locator("#keys-table tr[data-name='console-key']")
    row.wait_for()
    key_id = row.get_attribute("data-key")
    assert XSS in row.inner_text() and page.locator("main img").count() == 0
    assert page.dialogs == []
    entry = api(fleet, f"/keys/{key_id}")
    assert entry["key_sha256"] == hashlib.sha256(key.encode()).hexdigest()
    page.screenshot(path=shots / "keys-created.png", full_page=True)
    # Shown once: gone when hidden, and nowhere after a reload.
    page.click("#keys-result button")
    assert page.locator("#new-key").count() == 0
    page.reload()
    page.wait_for_selector("#keys-table")
    assert key not in page.content() and key[10:] not in page.content()
    page.fill("#keys-team", "web")
    page.press("#keys-team", "Enter")
    wait_for(lambda: page.locator("#keys-table tbody tr").count() == 1, what="team filter")
    page.fill("#keys-tag", "nope")
    page.press("#keys-tag", "Enter")
    page.wait_for_selector("#keys-list .notice")

    page.fill("#keys-tag", "ui")
    page.press("#keys-tag", "Enter")
    page.click(f"[data-rotate='{key_id}']")
    page.fill("#rotate-grace", "600")
    page.click("#rotate-form button[type='submit']")
    page.wait_for_selector("#new-key")
    rotated = page.input_value("#new-key")
    assert rotated.startswith("sk-cb-") and rotated != key
    page.locator(f"tr[data-key='{key_id}'] .badge", has_text="rotating").wait_for()
    assert api(fleet, f"/keys/{key_id}")["previous_sha256"] == entry["key_sha256"]
    page.screenshot(path=shots / "keys-rotated.png", full_page=True)

    page.click(f"[data-revoke='{key_id}']")
    page.click("#revoke-form button[type='submit']")
    page.wait_for_selector("#keys-result .notice.ok")
    assert f"Revoked {key_id}" in page.inner_text("#keys-result")
    page.wait_for_selector("#keys-list .notice")  # the filter now matches nothing
    r = httpx.get(
        f"{admin_url(fleet)}/v1/namespaces/{fleet.namespace}/keys/{key_id}",
        headers={"Authorization": f"Bearer {fleet.admin_token}"},
    )
    assert r.status_code == 404
    page.screenshot(path=shots / "keys.png", full_page=True)


PRICE = {"input_per_million": 1000.0, "output_per_million": 2000.0}
MICRO_PER_REQUEST = 1 * 1000 + 3 * 2000  # the mock reports 1 prompt, 3 completion tokens


def _admin(fleet: Fleet, method: str, path: str, **kw: Any) -> Any:
    r = httpx.request(
        method,
        f"{admin_url(fleet)}/v1/namespaces/{fleet.namespace}{path}",
        headers={"Authorization": f"Bearer {fleet.admin_token}", **kw.pop("headers", {})},
        **kw,
    )
    assert r.status_code < 300, r.text
    return r.json()


def _priced_usage(fleet: Fleet) -> tuple[str, int, int]:
    """A new key's requests through two replicas, with a price on `chat`'s deployment:
    (the key's id, requests answered, micro-dollars they cost), once flushed."""
    models = api(fleet, "/config")["document"]["models"]
    for m in models:
        if m["name"] == "chat":
            m["deployments"] = [{**d, "price": PRICE} for d in m["deployments"]]
    head = _admin(
        fleet,
        "PATCH",
        "/config?message=price+chat",
        content=json.dumps({"models": models}),
        headers={"Content-Type": "application/merge-patch+json"},
    )["version"]

    def on_head() -> bool:
        rows = api(fleet, "/replicas")["replicas"]
        return len(rows) == 3 and all(r["version"] == head and r["alive"] for r in rows)

    wait_for(on_head, timeout=20, what=f"3 replicas on version {head}")
    issued = _admin(fleet, "POST", "/keys", json={"name": "usage-key", "team": "usage"})
    key, key_id = issued["key"], issued["entry"]["id"]
    answered, micro = 0, 0

    def chat(url: str) -> bool:
        nonlocal answered, micro
        r = httpx.post(
            url + "/v1/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]},
            timeout=10,
        )
        if r.status_code != 200:
            return False
        answered += 1
        micro += MICRO_PER_REQUEST if "mock-a" in r.text else 0  # chat-backup is unpriced
        return True

    for name in ("replica-2", "replica-3"):
        url = fleet.child(name).url
        wait_for(lambda u=url: chat(u), timeout=20, what=f"{name} knows the new key")
        for _ in range(2):
            assert chat(url)
    assert answered == 6 and micro > 0
    # The document's client (`demo`) too: a second series in the charts.
    _chat(fleet.child("replica-3").url, fleet.client_key, 3, threading.Event())

    def flushed() -> bool:
        since = int(time.time()) - 3600
        total = api(fleet, f"/usage?key={key_id}&from={since}")["total"]
        demo = api(fleet, f"/usage?key=demo&from={since}")["total"]
        return bool(total["requests"] == answered and demo["requests"] >= 3)

    wait_for(flushed, timeout=10, what="the replicas' usage flushed")
    return key_id, answered, micro


def test_usage_page_charts_a_keys_requests_and_cost_and_the_keys_page_shows_them(
    admin_page: Any, fleet: Fleet, shots: Path
) -> None:
    page = admin_page
    key_id, answered, micro = _priced_usage(fleet)
    cost = f"${micro / 1e6:.6f}"
    page.click("#nav a[href='#/usage']")
    page.wait_for_selector("#chart-requests")
    page.select_option("#usage-range", "1h")
    page.select_option("#usage-group", "key")
    page.click("#usage-form button[type='submit']")
    row = page.locator(f"#usage-totals tr[data-group='{key_id}']")
    row.wait_for()
    assert row.locator("[data-requests]").get_attribute("data-requests") == str(answered)
    assert row.locator("[data-micro-usd]").inner_text() == cost
    assert "minute" in page.inner_text("main")
    # Its bars: per minute, stacked by key; the key's own bars sum to its requests.
    bars = page.locator(f"#chart-requests rect[data-series='{key_id}']")
    assert bars.count() >= 1
    assert sum(int(b.get_attribute("data-value")) for b in bars.all()) == answered
    cost_bars = page.locator(f"#chart-cost rect[data-series='{key_id}']")
    assert sum(int(b.get_attribute("data-value")) for b in cost_bars.all()) == micro
    legend = page.inner_text("#chart-requests .legend")
    assert key_id in legend and "demo" in legend
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280
    page.screenshot(path=shots / "usage.png", full_page=True)
    _docs(shots / "usage.png", "console-usage.png")

    # The Keys page: the key's last 24 h, and a link to its usage over time.
    page.click("#nav a[href='#/keys']")
    page.fill("#keys-team", "usage")
    page.press("#keys-team", "Enter")
    cell = page.locator(f"#keys-table tr[data-key='{key_id}'] td.key-usage")
    cell.wait_for()
    assert cell.get_attribute("data-requests") == str(answered)
    assert cell.get_attribute("data-micro-usd") == str(micro)
    assert f"{answered} req · {answered * 4} tok" in cell.inner_text() and cost in cell.inner_text()
    page.screenshot(path=shots / "keys-usage.png", full_page=True)
    cell.locator("a").click()
    page.wait_for_selector("#usage-total")
    assert page.input_value("#usage-key") == key_id
    total = page.locator("#usage-total [data-requests]")
    assert total.get_attribute("data-requests") == str(answered)
    assert page.get_attribute("#chart-requests", "data-total") == str(answered)
    assert page.get_attribute("#chart-cost", "data-total") == str(micro)
    assert page.inner_text("#usage-total [data-micro-usd]") == cost
    # Tokens: prompt and completion stacked (1 and 3 a request).
    prompt = page.locator("#chart-tokens rect[data-series='prompt']")
    assert sum(int(b.get_attribute("data-value")) for b in prompt.all()) == answered
    page.select_option("#usage-range", "7d")  # per UTC day: a bar a day, 8 of them
    page.click("#usage-form button[type='submit']")
    page.wait_for_selector("#usage-out[data-bucket='day'] #chart-requests")  # drawn
    days = page.locator("#chart-requests rect").all()
    assert sum(int(b.get_attribute("data-value")) for b in days) == answered
    assert page.get_attribute("#chart-requests", "data-total") == str(answered)
    assert page.get_attribute("#chart-cost", "data-total") == str(micro)
    page.set_viewport_size({"width": 400, "height": 800})
    try:
        assert page.evaluate("document.documentElement.scrollWidth") <= 400
        page.screenshot(path=shots / "usage-key-400px.png", full_page=True)
    finally:
        page.set_viewport_size({"width": 1280, "height": 800})


def test_audit_page(admin_page: Any, shots: Path) -> None:
    page = admin_page
    page.click("#nav a[href='#/audit']")
    page.wait_for_selector("#audit-table tr[data-action='rollback']")
    page.select_option("#filter-actor", "sre")
    assert page.locator("#audit-table tbody tr").count() >= 1
    page.screenshot(path=shots / "audit.png", full_page=True)
    page.click("#logout")
    page.wait_for_selector("#login-form")


def _docs(shot: Path, name: str) -> None:
    if os.environ.get("CONFIGBUS_UPDATE_DOCS") == "1":
        shutil.copyfile(shot, ROOT / "docs" / name)
