"""The pages of thaw serve: the catalogue search and rank endpoints in process, then "be a new
user" and the report driven in Debian's chromium through selenium (skipped without it).

With THAW_PAGE_SCREENSHOTS=DIR the browser test saves its screenshots there (the README's
come from ``THAW_PAGE_SCREENSHOTS=docs pytest tests/test_page.py``)."""

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from thaw.serve.app import create_app
from thaw.serve.service import Service
from thaw.serve.store import Store

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture()
def service(tiny_stack, tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'thaw.db'}")
    store.init()
    svc = Service(tiny_stack, store)
    svc.seed_store()
    yield svc
    store.close()


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """A results folder as thaw evaluate writes it (the planted table of test_report)."""
    from test_report import planted_result
    from thaw.eval.report import write_results

    out = tmp_path_factory.mktemp("results") / "results"
    write_results([planted_result()], out, seed=0, title="planted results")
    return out


def rate(client, user, items, start=0):
    batch = [{"event_id": f"{user}-{start + k}", "user": user, "item": item, "rating": 5.0, "kind": "rating",
              "ts": 1000 + start + k} for k, item in enumerate(items)]
    assert client.post("/v1/events", json={"events": batch}).status_code == 200


def test_items_are_found_by_the_words_of_their_titles(service):
    client = TestClient(create_app(service))
    titles = dict(zip(map(str, service.data.item_ids), service.data.item_features["title"], strict=True))
    found = client.get("/v1/items", params={"q": "DRAMA story", "n": 100}).json()
    expected = {i for i, t in titles.items() if "drama" in t.lower()}
    assert {r["item"] for r in found["items"]} == expected and found["total"] == len(expected)
    counts = [r["interactions"] for r in found["items"]]
    assert counts == sorted(counts, reverse=True) and counts[0] > 0  # the most interacted with first
    both = client.get("/v1/items", params={"q": "7 drama", "n": 100}).json()["items"]
    assert both and {r["item"] for r in both} == {i for i in expected if "7" in titles[i]}
    assert client.get("/v1/items", params={"q": "no such words"}).json() == {"items": [], "total": 0}
    assert len(client.get("/v1/items", params={"n": 5}).json()["items"]) == 5
    named = client.get("/v1/items", params={"ids": "i3,unknown,i1"}).json()["items"]
    assert [(r["item"], r["title"]) for r in named] == [("i3", titles["i3"]), ("i1", titles["i1"])]
    assert client.get("/v1/items", params={"n": 0}).status_code == 422


def test_an_items_rank_is_its_place_in_the_recommendations(service):
    client = TestClient(create_app(service))
    rate(client, "ranker", ["i2", "i9"])
    listed = client.get("/v1/users/ranker/recommendations", params={"n": 60}).json()["items"]
    for position, row in enumerate(listed[:12], start=1):
        out = client.get("/v1/users/ranker/rank", params={"item": row["item"]}).json()
        assert (out["rank"], out["seen"], out["k"]) == (position, False, 2)
        assert out["score"] == pytest.approx(row["score"])
    assert listed and client.get("/v1/users/ranker/rank", params={"item": "i2"}).json()["rank"] is None
    assert client.get("/v1/users/ranker/rank", params={"item": "nope"}).status_code == 404
    # a new item, scored by the content member only: it has a place, not the last by default
    genre = service.data.item_features["genres"].iloc[1][0]
    assert client.put("/v1/items/fresh", json={"features": {"title": f"{genre} story new",
                                                             "genres": [genre]}}).status_code in (200, 201)
    fresh = client.get("/v1/users/ranker/rank", params={"item": "fresh"}).json()
    assert 1 <= fresh["rank"] <= fresh["of"] == service.data.n_items + 1 - 2
    assert client.get("/v1/items", params={"q": "story new"}).json()["items"][0]["item"] == "fresh"


def test_the_page_and_the_report_are_served(service, results):
    plain = TestClient(create_app(service))
    page = plain.get("/")
    assert page.status_code == 200 and "Be a new user" in page.text and '"rating_scale"' in page.text
    assert '"report": false' in page.text and plain.get("/report").status_code == 404
    assert plain.get("/static/page.js").headers["content-type"].startswith("text/javascript")
    assert plain.get("/static/../page.py").status_code == 404 and plain.get("/static/x.js").status_code == 404
    served = TestClient(create_app(service, results=str(results)))
    assert '"report": true' in served.get("/").text
    report = served.get("/report")
    assert report.status_code == 200 and "<svg id='curve0'" in report.text
    assert served.get("/report/cold_to_warm.png").headers["content-type"] == "image/png"
    assert served.get("/report/results.csv").status_code == 404  # only the report and its picture
    schema = served.get("/openapi.json").json()["paths"]
    assert "/v1/items" in schema and "/v1/users/{user}/rank" in schema and "/" not in schema


def test_the_page_asks_for_a_token_where_the_api_needs_one(service):
    from thaw.serve.auth import Auth

    client = TestClient(create_app(service, Auth({"x" * 16: frozenset({"read", "write"})})))
    assert client.get("/").status_code == 200  # the page holds no data; its calls carry the token
    assert client.get("/v1/items").status_code == 401
    assert client.get("/v1/items", headers={"Authorization": "Bearer " + "x" * 16}).status_code == 200


def test_serve_refuses_a_results_folder_without_a_report(tiny_stack, tmp_path, monkeypatch):
    from thaw.errors import ThawError
    from thaw.serve.cli import serve

    monkeypatch.delenv("THAW_API_TOKENS", raising=False)
    db = tmp_path / "thaw.db"
    with pytest.raises(ThawError, match="no report.html there"):
        serve(tiny_stack, db=f"sqlite:///{db}", host="127.0.0.1", port=0, workers=1, results=tmp_path)
    assert not db.exists()  # refused before the store was touched


# --- in the browser ------------------------------------------------------------------------------


class Recorded:
    """The app, with the status of every response it sends kept (path, status)."""

    def __init__(self, app):
        self.app, self.seen = app, []

    async def __call__(self, scope, receive, send):
        async def sending(message):
            if message["type"] == "http.response.start":
                self.seen.append((scope["path"], message["status"]))
            await send(message)

        await self.app(scope, receive, sending if scope["type"] == "http" else send)


@pytest.fixture()
def server(service, results):
    import uvicorn

    app = Recorded(create_app(service, results=str(results)))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}", app.seen
    server.should_exit = True
    thread.join(10)
    sock.close()


@pytest.fixture()
def browser(tmp_path):
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("Debian's chromium and chromium-driver are not installed (apt-get install chromium "
                    "chromium-driver; .ci/run installs them)")
    webdriver = pytest.importorskip("selenium.webdriver")
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager look for a browser
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'chromium'}", "--window-size=1280,1000"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(20)
    yield driver
    driver.quit()


def test_a_new_user_rates_three_items_and_sees_the_list_and_route_move(server, browser):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    url, statuses = server
    wait = WebDriverWait(browser, 10, ignored_exceptions=(StaleElementReferenceException,))  # lists re-render
    shots = os.environ.get("THAW_PAGE_SCREENSHOTS")

    def step_done(n):
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-step") == str(n))

    def top_items():
        return [li.get_attribute("data-item") for li in browser.find_elements(By.CSS_SELECTOR, "#top li")]

    browser.get(url + "/")
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
    Select(browser.find_element(By.NAME, "gender")).select_by_visible_text("F")
    browser.find_element(By.ID, "start-button").click()
    step_done(1)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#search-results li[data-item]")) == 12)
    cold, cold_route = top_items(), browser.find_element(By.ID, "route").text
    assert len(cold) == 10 and cold_route.startswith("K=0: band 0")
    assert "gender F" in browser.find_element(By.ID, "user-label").text

    rated = []
    for step in range(3):  # rate the first unrated item of the search results, 5 stars
        row = browser.find_elements(By.CSS_SELECTOR, "#search-results li[data-item]")[step]
        rated.append(row.get_attribute("data-item"))
        row.find_element(By.CSS_SELECTOR, "button[data-rating='5']").click()
        step_done(step + 2)
    warm, warm_route = top_items(), browser.find_element(By.ID, "route").text
    assert len(warm) == 10 and warm != cold and not set(rated) & set(warm)  # seen items are gone
    assert warm_route.startswith("K=3: band") and warm_route != cold_route
    assert "circuit breaker" in warm_route
    timeline = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#timeline li")]
    assert len(timeline) == 4 and timeline[0].startswith("arrived with gender F")
    assert all(t.startswith("rated “") for t in timeline[1:]) and "K=3, band" in timeline[3]
    if shots:
        Path(shots).mkdir(parents=True, exist_ok=True)
        browser.set_window_size(1280, 1060)  # down to the timeline's last line
        browser.save_screenshot(str(Path(shots) / "page.png"))
        browser.set_window_size(1280, 1000)

    browser.find_element(By.CSS_SELECTOR, "#new-item summary").click()
    browser.find_element(By.ID, "item-title").send_keys("Drama story of a brand new film")
    browser.find_element(By.ID, "item-genres").send_keys("Drama")
    browser.find_element(By.CSS_SELECTOR, "#item-form button").click()
    step_done(5)
    wait.until(lambda d: "brand new" in d.find_element(By.CSS_SELECTOR, "#search-results li").text)
    assert "now ranks #" in browser.find_element(By.ID, "item-rank").text
    assert browser.find_element(By.ID, "error").get_attribute("hidden") is not None  # no error shown

    browser.find_element(By.ID, "report-link").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "svg#curve0 g.line.strong.stack"))
    verdicts = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "ul.verdicts li")]
    assert len(verdicts) == 4 and verdicts[-1].startswith("K=10: stack")
    box = browser.find_element(By.CSS_SELECTOR, ".legend input[data-model='bpr']")
    faint = browser.find_element(By.CSS_SELECTOR, "svg#curve0 g[data-model='bpr']")
    assert "faint" in faint.get_attribute("class")
    box.click()  # the legend draws a faint line strong
    assert "strong" in faint.get_attribute("class")
    if shots:
        box.click()
        browser.save_screenshot(str(Path(shots) / "report.png"))

    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert severe == []
    assert statuses and all(status < 400 for _, status in statuses), statuses
