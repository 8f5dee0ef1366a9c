"""A real browser (Debian Chromium via Playwright) uses the page as a person would."""
import csv
import re
import time

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from .conftest import ARTIFACTS

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, app):
    context = browser.new_context(accept_downloads=True, viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.goto(app.url)
    expect(page.locator("#send")).to_be_visible(timeout=30_000)
    yield page
    context.close()


def pick(page: Page, elem_id: str, option_prefix: str) -> None:
    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option", name=re.compile("^" + re.escape(option_prefix))).first.click()


def bot_text(page: Page, pane: str) -> str:
    messages = page.locator(f"#{pane} [data-testid='bot']")
    return messages.last.inner_text() if messages.count() else ""


def test_preset_stream_vote_reference_and_csv_download(page, tmp_path):
    pick(page, "category", "常识 Common sense")
    pick(page, "preset", "en-common-2:")
    expect(page.locator("#question textarea")).to_have_value(
        "Which is heavier: a kilogram of feathers or a kilogram of steel?")
    page.locator("#send").click()
    # both panes fill while the answers stream (the vote buttons unlock only when both are done)
    deadline = time.time() + 60
    both_streaming = False
    while time.time() < deadline:
        a, b = bot_text(page, "chat-a"), bot_text(page, "chat-b")
        if a.strip("… ") and b.strip("… "):
            both_streaming = page.locator("#vote-a").is_disabled()
            break
        time.sleep(0.05)
    assert both_streaming, "both panes should show text while still streaming"
    expect(page.locator("#vote-a")).to_be_enabled(timeout=60_000)
    expect(page.locator("#metrics-a")).to_contain_text("tokens/s")
    page.locator("#vote-a").click()
    expect(page.locator("#reveal")).to_contain_text("You voted: A better")
    expect(page.locator("#reveal")).to_contain_text("Neither; both weigh one kilogram.")
    expect(page.locator("#vote-b")).to_be_disabled()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "arena-after-vote.png"), full_page=True)

    page.get_by_role("tab", name="Export / import").click()
    page.locator("#export-csv").click()
    link = page.locator("#export-file a").first
    expect(link).to_be_visible(timeout=15_000)
    with page.expect_download() as download:
        link.click()
    path = tmp_path / "votes.csv"
    download.value.save_as(path)
    rows = list(csv.DictReader(open(path, encoding="utf-8-sig")))
    row = [r for r in rows if r["preset_id"] == "en-common-2"][-1]
    assert row["vote"] == "A better" and row["model_a"] == "smol-a" and row["answer_a"]


def test_html_in_a_question_is_shown_as_text_not_run(page):
    page.locator("#question textarea").fill('<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>hi')
    page.locator("#send").click()
    expect(page.locator("#vote-a")).to_be_enabled(timeout=60_000)
    assert page.evaluate("window.__pwned") is None
    assert page.locator("#chat-a img[src='x']").count() == 0


def test_empty_question_shows_an_error_and_sends_nothing(page):
    page.locator("#send").click()
    expect(page.get_by_text("The question is empty")).to_be_visible(timeout=10_000)
    assert bot_text(page, "chat-a") == ""


def test_blind_battle_hides_names_then_reveals_them_and_leaderboard_plots(page):
    page.get_by_label("Battle (blind)").check()
    expect(page.locator("#model-a")).to_be_hidden()
    page.locator("#question textarea").fill("Name a fruit.")
    page.locator("#send").click()
    expect(page.locator("#vote-tie")).to_be_enabled(timeout=60_000)
    # The status panel lists the whole pool by design; what must stay hidden is who is A and who is B.
    for elem in ("chat-a", "chat-b", "metrics-a", "metrics-b", "reveal"):
        html = page.locator(f"#{elem}").inner_html()
        assert "Smol" not in html and "smol" not in html.lower().replace("smollm", ""), elem
    assert page.locator("#chat-a").get_by_text("Model A").count() >= 1
    page.locator("#vote-tie").click()
    expect(page.locator("#reveal")).to_contain_text("Model A was Smol")
    expect(page.locator("#chat-a")).to_contain_text("Smol")
    page.screenshot(path=str(ARTIFACTS / "blind-after-vote.png"), full_page=True)
    page.get_by_role("tab", name="Leaderboard").click()
    page.locator("#refresh-leaderboard").click()
    expect(page.locator("#ratings-plot img, #ratings-plot svg").first).to_be_visible(timeout=20_000)
    page.screenshot(path=str(ARTIFACTS / "leaderboard.png"), full_page=True)


def test_stop_ends_both_answers_keeps_them_and_allows_a_vote(page):
    page.locator("#question textarea").fill("Write a very long story about a dragon who learns to cook.")
    page.locator("#send").click()
    expect(page.locator("#chat-a [data-testid='bot']")).to_have_count(1, timeout=30_000)
    page.wait_for_function("document.querySelector('#chat-a [data-testid=bot]').innerText.length > 20",
                           timeout=30_000)
    page.locator("#stop").click()
    expect(page.locator("#chat-a")).to_contain_text("(stopped)", timeout=15_000)
    expect(page.locator("#vote-b")).to_be_enabled()
    page.locator("#vote-b").click()
    expect(page.locator("#reveal")).to_contain_text("You voted: B better")
