"""The web page end to end: Debian's Chromium, driven by Playwright, against a real `clipseek serve`.

The server serves a data folder indexed beforehand with the real offline model: the sample photos
that ship with scikit-image and scikit-learn, from a CSV manifest that gives each one a ``kind``
(animal, space, texture ...), so filters change the results in a way the test can check. The
queries and their first results were chosen where the offline model ranks the right photo first
by a wide cosine margin ("a cat" -> chelsea 0.19 vs 0.04, "摩托车" -> motorcycle 0.26 vs 0.08,
"一杯咖啡" -> coffee 0.29 vs 0.08).

Assertions are on the DOM: the cards' record ids (``data-id``), captions, tags, scores, the chip
that names the query, and the thumbnails actually decoded by the browser. The page runs under its
own Content-Security-Policy (no ``bypass_csp``), so a violation would break the test.

Screenshots: ``CLIPSEEK_SCREENSHOTS=docs/screenshots pytest tests/server/test_web.py`` rewrites
the PNGs shown in the README (1280x800, reduced to 256 colours).

Needs ``/usr/bin/chromium`` (``apt-get install chromium``; ``.ci/run`` installs it). Without it the
tests skip with that reason, except under ``CI``, where they fail.
"""

from __future__ import annotations

import base64
import csv
import io
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from clipseek.engine import Engine
from clipseek.server.keys import KeyStore

from ._serving import LiveServer, start_server

pytestmark = pytest.mark.model

CHROMIUM = Path(os.environ.get("CLIPSEEK_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1280, "height": 800}

KIND = {
    "chelsea": "animal", "horse": "animal",
    "astronaut": "space", "hubble_deep_field": "space", "moon": "space", "rocket": "space",
    "camera": "object", "coffee": "object", "coins": "object", "motorcycle": "object",
    "page": "document", "text": "document",
    "ihc": "science", "retina": "science",
    "brick": "texture", "grass": "texture", "gravel": "texture",
    "china": "place", "flower": "plant",
}
SPACE = {k for k, v in KIND.items() if v == "space"}
XSS = '<img src=x onerror="document.body.dataset.pwned=1">'
XSS_FIELD = "<b>note</b>"


def _missing(what: str) -> None:
    """Skip in a developer's run, fail under CI (where the browser must be there)."""
    if os.environ.get("CI"):
        pytest.fail(f"{what} (CI is set: these tests must run there; .ci/run installs chromium)")
    pytest.skip(what)


@pytest.fixture(scope="module")
def playwright_api() -> Any:
    if not CHROMIUM.exists():
        _missing(f"{CHROMIUM} not found: install Debian's chromium (apt-get install -y chromium) to run the web tests")
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        _missing("the playwright package is missing: pip install 'clipseek[test]'")
    return sync_playwright, expect


@pytest.fixture(scope="module")
def browser(playwright_api: Any) -> Iterator[Any]:
    sync_playwright, _ = playwright_api
    pw = sync_playwright().start()
    try:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()
    finally:
        pw.stop()


@pytest.fixture
def expect(playwright_api: Any) -> Any:
    exp = playwright_api[1]
    exp.set_options(timeout=30_000)  # a first image query loads the image tower; the machine may be busy
    return exp


# ------------------------------------------------------------------------------------ data


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A server root: ``photos/`` (19 photos and photos.csv with id, path, caption, kind) and
    ``more/`` (a plain folder of 5 of them and a broken JPEG, indexed through the page)."""
    from clipseek.samples import sample_photos

    base = tmp_path_factory.mktemp("root")
    (base / "photos").mkdir()
    (base / "more").mkdir()
    rows = []
    for sid, path, caption in sample_photos():
        dst = base / "photos" / f"{sid}{path.suffix}"
        shutil.copyfile(path, dst)
        rows.append({"id": sid, "path": dst.name, "caption": caption, "kind": KIND[sid]})
        if sid in ("coffee", "rocket", "flower", "china", "moon"):
            shutil.copyfile(path, base / "more" / dst.name)
    (base / "more" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    with (base / "photos" / "photos.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["id", "path", "caption", "kind"])
        w.writeheader()
        w.writerows(rows)
    return base


def _start(home: Path, args: list[str], log_dir: Path) -> LiveServer:
    return start_server(home, log_dir / "server.log", args)


@pytest.fixture(scope="module")
def site(root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """`clipseek serve --root ROOT` over a data folder holding collection ``photos`` (open access)."""
    home = tmp_path_factory.mktemp("home")
    with Engine(home) as eng:
        report = eng.collection("photos", model="offline").index(str(root / "photos" / "photos.csv"))
        assert (report.added, report.failed) == (19, [])
    srv = _start(home, ["--root", str(root)], tmp_path_factory.mktemp("log"))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def locked(root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, str]]:
    """A server that needs a (read-only) API key, holding collection ``xss`` whose captions and
    field names are HTML, and a damaged collection ``broken``."""
    home = tmp_path_factory.mktemp("locked")
    manifest = home / "xss.csv"
    with manifest.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "path", "caption", XSS_FIELD])
        w.writerow(["cat", str(root / "photos" / "chelsea.png"), XSS, "<script>document.body.dataset.pwned=2</script>"])
        w.writerow(["cup", str(root / "photos" / "coffee.png"), "a cup & <i>saucer</i>", "x"])
    with Engine(home) as eng:
        assert eng.collection("xss", model="offline").index(str(manifest)).added == 2
    broken = home / "collections" / "broken"  # listed by the server as unavailable
    broken.mkdir()
    (broken / "collection.json").write_text("{not json")
    key, _ = KeyStore(home / "keys.json").create(name="web", read_only=True)
    srv = _start(home, [], tmp_path_factory.mktemp("log"))
    yield srv, key
    srv.stop()


# ------------------------------------------------------------------------------------ page helpers


@pytest.fixture
def new_page(browser: Any) -> Iterator[Callable[..., Any]]:
    """Pages in fresh browser contexts (no shared localStorage). Page errors and CSP violations fail the test."""
    contexts = []
    problems: list[str] = []

    def make(locale: str = "en-US") -> Any:
        ctx = browser.new_context(viewport=VIEWPORT, locale=locale)
        contexts.append(ctx)
        page = ctx.new_page()
        page.set_default_timeout(30_000)
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.on(
            "console",
            lambda m: problems.append(f"console: {m.text}") if "Content Security Policy" in m.text else None,
        )
        return page

    yield make
    for ctx in contexts:
        ctx.close()
    assert not problems, problems


def shot(page: Any, name: str) -> None:
    """Save a screenshot for the README when CLIPSEEK_SCREENSHOTS names a folder."""
    out = os.environ.get("CLIPSEEK_SCREENSHOTS")
    if not out:
        return
    from PIL import Image

    wait_thumbnails(page)
    page.mouse.move(0, 0)
    png = page.screenshot()
    img = Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    Path(out).mkdir(parents=True, exist_ok=True)
    img.save(Path(out) / name, optimize=True)


def open_site(page: Any, url: str, expect: Any, collection: str = "photos") -> None:
    page.goto(url + "/")
    expect(page.locator("#collection")).to_have_value(collection)


def rendered(page: Any) -> int:
    return int(page.locator("#results").get_attribute("data-rendered"))


def wait_results(page: Any, expect: Any, before: int) -> None:
    """Until a search that started after ``before`` renders were counted has rendered."""
    expect(page.locator("#results")).not_to_have_attribute("data-rendered", str(before))
    expect(page.locator("#results")).to_have_attribute("data-state", "done")


def search(page: Any, expect: Any, text: str) -> None:
    before = rendered(page)
    page.fill("#q", text)
    page.press("#q", "Enter")
    wait_results(page, expect, before)


def ids(page: Any) -> list[str]:
    return [c.get_attribute("data-id") for c in page.locator("#results .card").all()]


def caption(page: Any, i: int = 0) -> str:
    return str(page.locator("#results .card .caption").nth(i).text_content())


def wait_thumbnails(page: Any, timeout: float = 30) -> list[dict[str, Any]]:
    """Every card's thumbnail decoded by the browser (or failed); returns (src, width) of each."""
    deadline = time.monotonic() + timeout
    while True:
        state = page.locator("#results .card .thumb img").evaluate_all(
            "imgs => imgs.map(i => ({src: i.getAttribute('src'), done: i.complete, width: i.naturalWidth}))"
        )
        if all(s["done"] for s in state) or time.monotonic() > deadline:
            return state
        time.sleep(0.1)


def file_transfer(page: Any, path: Path, mime: str) -> Any:
    """A DataTransfer holding ``path`` as a File, as a drag or a paste would carry it."""
    b64 = base64.b64encode(path.read_bytes()).decode()
    return page.evaluate_handle(
        """([b64, name, mime]) => {
            const bin = atob(b64);
            const bytes = new Uint8Array(bin.length);
            for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], name, {type: mime}));
            return dt;
        }""",
        [b64, path.name, mime],
    )


# ------------------------------------------------------------------------------------ tests


def test_the_page_and_its_files_are_served_with_a_strict_policy(site: LiveServer) -> None:
    with httpx.Client(base_url=site.url) as http:
        page = http.get("/")
        assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "img-src 'self' blob:" in csp and "default-src 'none'" in csp
        assert '<script src="/web/app.js" defer></script>' in page.text
        assert http.get("/", headers={"If-None-Match": page.headers["etag"]}).status_code == 304
        for path, kind in [("/web/app.js", "text/javascript"), ("/web/style.css", "text/css"), ("/web/icon.svg", "image/svg+xml")]:
            r = http.get(path)
            assert r.status_code == 200 and r.headers["content-type"].startswith(kind), path
            assert r.headers["x-content-type-options"] == "nosniff"
        # only the page's own files, by name: nothing else from the package or the disk
        for path in ["/web/web.py", "/web/../web.py", "/web/%2e%2e/app.py", "/web/", "/web"]:
            r = http.get(path)
            assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", path
        assert "/" not in http.get("/openapi.json").json()["paths"]


def test_english_query_ranks_the_cat_first_with_its_thumbnail(new_page: Any, site: LiveServer, expect: Any) -> None:
    page = new_page("en-US")
    open_site(page, site.url, expect)
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.locator("#collection-info")).to_have_text("19 records · offline")
    expect(page.locator("#empty")).to_be_visible()
    search(page, expect, "a cat")
    assert ids(page)[0] == "chelsea"
    assert len(ids(page)) == 19 and set(ids(page)) == set(KIND)
    expect(page.locator("#status")).to_contain_text("19 results in")
    first = page.locator("#results .card").first
    assert caption(page) == "a tabby cat"
    expect(first.locator(".tag")).to_have_text("kind:animal")
    assert float(first.get_attribute("data-score")) > 0.5 > float(page.locator("#results .card").nth(1).get_attribute("data-score"))
    expect(first.locator(".score")).to_have_class("score good")
    expect(page.locator("#empty")).to_be_hidden()
    thumbs = wait_thumbnails(page)
    assert thumbs[0]["src"] == "/v1/collections/photos/records/chelsea/thumbnail?size=384"
    assert all(t["width"] > 0 for t in thumbs), [t for t in thumbs if not t["width"]]
    # metadata in the details table, escaped as text
    first.locator("summary").click()
    rows = dict(zip(first.locator("th").all_text_contents(), first.locator("td").all_text_contents()))
    assert rows["id"] == "chelsea" and rows["kind"] == "animal" and rows["caption"] == "a tabby cat"
    first.locator("summary").click()
    shot(page, "search-en.png")


def test_chinese_query_in_a_chinese_browser_and_the_language_switch(new_page: Any, site: LiveServer, expect: Any) -> None:
    page = new_page("zh-CN")
    open_site(page, site.url, expect)
    expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
    expect(page.locator("#tab-search")).to_have_text("搜索")
    expect(page.locator("#search")).to_have_text("搜索")
    search(page, expect, "一杯咖啡")
    assert ids(page)[0] == "coffee"
    search(page, expect, "摩托车")
    assert ids(page)[0] == "motorcycle" and caption(page) == "a motorcycle"
    expect(page.locator("#status")).to_contain_text("19 个结果")
    expect(page.locator("#results .card .like").first).to_have_text("查找相似")
    shot(page, "search-zh.png")
    # English, and the choice is remembered over a reload
    page.click(".lang button[data-lang=en]")
    expect(page.locator("#results .card .like").first).to_have_text("More like this")
    expect(page.locator("#status")).to_contain_text("19 results in")
    page.reload()
    expect(page.locator("#tab-search")).to_have_text("Search")
    expect(page.locator("html")).to_have_attribute("lang", "en")


def test_image_by_button_drop_and_paste_finds_that_photo_first(new_page: Any, site: LiveServer, root: Path, expect: Any) -> None:
    page = new_page()
    open_site(page, site.url, expect)
    photos = root / "photos"

    before = rendered(page)
    page.set_input_files("#file", str(photos / "coffee.png"))
    wait_results(page, expect, before)
    assert ids(page)[0] == "coffee"
    expect(page.locator("#query-chip")).to_be_visible()
    expect(page.locator("#query-label")).to_have_text("Image: coffee.png")
    assert page.locator("#query-thumb").get_attribute("src").startswith("blob:")
    assert float(page.locator("#results .card").first.get_attribute("data-score")) > 0.9
    shot(page, "image-upload.png")

    drag = file_transfer(page, photos / "rocket.jpg", "image/jpeg")
    page.dispatch_event("body", "dragenter", {"dataTransfer": drag})
    expect(page.locator("#drop-overlay")).to_be_visible()
    before = rendered(page)
    page.dispatch_event("body", "drop", {"dataTransfer": drag})
    wait_results(page, expect, before)
    expect(page.locator("#drop-overlay")).to_be_hidden()
    assert ids(page)[0] == "rocket"
    expect(page.locator("#query-label")).to_have_text("Image: rocket.jpg")

    clip = file_transfer(page, photos / "china.jpg", "image/jpeg")
    before = rendered(page)
    page.evaluate("dt => document.dispatchEvent(new ClipboardEvent('paste', {clipboardData: dt, bubbles: true}))", clip)
    wait_results(page, expect, before)
    assert ids(page)[0] == "china"

    # a file that is no image is refused on the page, with no request
    text = file_transfer(page, photos / "photos.csv", "text/csv")
    page.dispatch_event("body", "drop", {"dataTransfer": text})
    expect(page.locator("#notice-text")).to_have_text("That file is not an image.")
    assert ids(page)[0] == "china"


def test_filters_from_the_collection_fields_and_the_threshold(new_page: Any, site: LiveServer, expect: Any) -> None:
    page = new_page()
    open_site(page, site.url, expect)
    search(page, expect, "a cat")
    assert ids(page)[0] == "chelsea"

    page.click("#add-filter")
    options = page.locator(".filter-field option").all_text_contents()
    assert "kind" in options and "caption" in options and not any(o.startswith("_") for o in options)
    page.select_option(".filter-field", "kind")
    before = rendered(page)
    page.fill(".filter-value", "space")
    page.press(".filter-value", "Enter")
    wait_results(page, expect, before)
    assert set(ids(page)) == SPACE
    assert page.locator("#results .card .tag").all_text_contents() == ["kind:space"] * len(SPACE)
    # the values seen in results are offered in the field's datalist
    assert "animal" in page.locator(".filter-row datalist option").evaluate_all("os => os.map(o => o.value)")
    shot(page, "filter.png")

    before = rendered(page)
    page.select_option(".filter-op", "in")
    wait_results(page, expect, before)  # the op alone changes the query: "in [space]"
    before = rendered(page)
    page.fill(".filter-value", "animal, document")
    page.press(".filter-value", "Enter")
    wait_results(page, expect, before)
    assert ids(page)[0] == "chelsea" and set(ids(page)) == {"chelsea", "horse", "page", "text"}

    before = rendered(page)
    page.click(".filter-row button")
    wait_results(page, expect, before)
    expect(page.locator(".filter-row")).to_have_count(0)
    assert len(ids(page)) == 19

    # the threshold slider: 0.5 on the calibrated score keeps only the cat
    page.focus("#threshold")
    for _ in range(10):
        page.keyboard.press("ArrowRight")
    expect(page.locator("#threshold-value")).to_have_text("0.50")
    expect(page.locator("#results .card")).to_have_count(1)
    assert ids(page) == ["chelsea"]
    expect(page.locator("#results")).to_have_attribute("data-state", "done")


def test_more_like_this_searches_by_the_record_without_itself(new_page: Any, site: LiveServer, expect: Any) -> None:
    page = new_page()
    open_site(page, site.url, expect)
    search(page, expect, "a cat")
    by_text = ids(page)
    assert by_text[0] == "chelsea"
    before = rendered(page)
    page.locator("#results .card").first.locator(".like").click()
    wait_results(page, expect, before)
    similar = ids(page)
    assert "chelsea" not in similar and len(similar) == 18 and set(similar) == set(KIND) - {"chelsea"}
    assert similar != by_text[1:]  # ranked by the photo, not by the words
    expect(page.locator("#query-label")).to_have_text("More like: a tabby cat")
    expect(page.locator("#query-thumb")).to_have_attribute("src", "/v1/collections/photos/records/chelsea/thumbnail?size=384")
    expect(page.locator("#q")).to_have_value("")
    shot(page, "more-like-this.png")
    # and again from one of those results
    second = similar[0]
    before = rendered(page)
    page.locator("#results .card").first.locator(".like").click()
    wait_results(page, expect, before)
    assert second not in ids(page) and "chelsea" in ids(page)
    expect(page.locator("#query-thumb")).to_have_attribute("src", f"/v1/collections/photos/records/{second}/thumbnail?size=384")


def test_indexing_view_starts_a_job_and_shows_its_progress(new_page: Any, site: LiveServer, root: Path, expect: Any) -> None:
    page = new_page()
    open_site(page, site.url, expect)
    page.click("#tab-index")
    expect(page.locator("#view-index")).to_be_visible()
    expect(page.locator("#index-collection")).to_have_value("photos")

    # a source outside the server's roots is refused with the server's message
    page.fill("#index-source", "/etc")
    page.fill("#index-collection", "more")
    page.click("#index-start")
    expect(page.locator("#notice")).to_be_visible()
    expect(page.locator("#notice-text")).to_contain_text("root")

    page.fill("#index-source", str(root / "more"))
    page.click("#index-start")
    job = page.locator(".job[data-state]").first
    expect(job.locator(".job-collection")).to_have_text("more")
    expect(job).to_have_attribute("data-state", "done", timeout=90_000)
    expect(job.locator(".badge.state")).to_have_text("done")
    expect(job.locator(".job-progress")).to_have_text("6 of 6")
    expect(job.locator(".job-report")).to_contain_text("5 added · 0 updated · 0 unchanged · 1 failed · ")
    job.locator(".job-failures summary").click()
    expect(job.locator(".job-failures li")).to_have_count(1)
    expect(job.locator(".job-failures li .mono")).to_have_text(str((root / "more" / "broken.jpg").resolve()))
    expect(job.locator(".job-failures li .reason")).to_have_text("corrupt_image")
    row = page.locator("#collections-table tr[data-name=more] td")
    expect(row.nth(1)).to_have_text("5")
    expect(row.nth(2)).to_have_text("offline")
    expect(job.locator(".job-source")).to_have_text(str(root / "more"))
    expect(page.locator("#collection option[value=more]")).to_have_count(1)
    shot(page, "indexing.png")

    job.locator("button").click()  # Open: search the new collection
    expect(page.locator("#view-search")).to_be_visible()
    expect(page.locator("#collection")).to_have_value("more")
    expect(page.locator("#collection-info")).to_have_text("5 records · offline")
    search(page, expect, "a cup of coffee")
    assert ids(page)[0] == str((root / "more" / "coffee.png").resolve())
    assert caption(page) == "coffee.png"
    thumbs = wait_thumbnails(page)
    assert len(thumbs) == 5 and all(t["width"] > 0 for t in thumbs)


def test_api_key_is_asked_for_kept_and_record_text_is_never_markup(new_page: Any, locked: tuple[LiveServer, str], expect: Any) -> None:
    srv, key = locked
    page = new_page()
    page.goto(srv.url + "/")
    expect(page.locator("#keybar")).to_be_visible()
    expect(page.locator("#key-message")).to_have_text("This server needs an API key.")
    page.fill("#api-key", "csk_wrong")
    page.press("#api-key", "Enter")
    expect(page.locator("#key-message")).to_have_text("That API key was refused.")
    page.fill("#api-key", key)
    page.press("#api-key", "Enter")
    expect(page.locator("#collection")).to_have_value("xss")
    expect(page.locator("#keybar")).to_be_hidden()
    # the damaged collection is named, and cannot be chosen
    broken = page.locator("#collection option[disabled]")
    expect(broken).to_have_text("broken (unavailable)")
    assert "not a valid collection file" in broken.get_attribute("title")

    search(page, expect, "a cat")
    assert ids(page)[0] == "cat"
    assert caption(page) == XSS  # shown as text
    assert caption(page, 1) == "a cup & <i>saucer</i>"
    first = page.locator("#results .card").first
    first.locator("summary").click()
    rows = dict(zip(first.locator("th").all_text_contents(), first.locator("td").all_text_contents()))
    assert rows[XSS_FIELD] == "<script>document.body.dataset.pwned=2</script>"
    assert page.locator("#results img").count() == 2  # the two thumbnails, nothing injected
    assert page.locator("#results script, #results b, #results i").count() == 0
    assert page.locator("body").get_attribute("data-pwned") is None
    # thumbnails need the key: fetched with it into blob: URLs
    thumbs = wait_thumbnails(page)
    assert all(t["src"].startswith("blob:") and t["width"] > 0 for t in thumbs), thumbs

    # the key is kept (localStorage) over a reload
    page.reload()
    expect(page.locator("#collection")).to_have_value("xss")
    expect(page.locator("#keybar")).to_be_hidden()

    # a read-only key cannot start a job: the page says so
    page.click("#tab-index")
    expect(page.locator("#collections-table tr[data-name=broken] td").nth(1)).to_contain_text("unavailable: ")
    page.fill("#index-source", "/tmp")
    page.click("#index-start")
    expect(page.locator("#notice-text")).to_contain_text("read-only")
