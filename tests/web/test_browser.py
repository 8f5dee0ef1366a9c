"""A real browser (Debian Chromium via Playwright) uses every control of the page as a person would.

The main flow runs on the shipped default pair (Qwen2.5-Coder-0.5B + SmolLM2-135M); most other
tests use SmolLM2 under two ids, and the recording stub server where a test must see exactly
what the arena sent (follow-up history, stop before the first token, images that must not load).
Screenshots of the main steps go to test-artifacts/.
"""
import csv
import json
import re
import subprocess
import sys
import time

import pytest
from playwright.sync_api import Page, expect

from arena.core.texts import TEXTS

from ..conftest import ARTIFACTS, SMOL_FP32, default_pair_catalog, start_app, wait_for

LONG = "Write a long story about a dragon who learns to cook. Use many paragraphs."
METRICS = re.compile(r"Time to first token \d+\.\d+ s · total \d+\.\d+ s · tokens \d+ · \d+\.\d+ tokens/s")
VOTES = ("vote-a", "vote-b", "vote-tie", "vote-bothbad")


def open_page(browser, url: str, locale: str = "en-US") -> Page:
    context = browser.new_context(accept_downloads=True, viewport={"width": 1400, "height": 1000}, locale=locale)
    page = context.new_page()
    page.goto(url)
    expect(page.locator("#send")).to_be_visible(timeout=30_000)
    # The load event picked the browser's language.
    expected = "中文" if locale.startswith("zh") else "English"
    expect(page.locator("#language input:checked + span")).to_have_text(expected, timeout=30_000)
    return page


@pytest.fixture
def page(browser, app):
    page = open_page(browser, app.url)
    yield page
    page.context.close()


@pytest.fixture
def stub_page(browser, stub_app):
    page = open_page(browser, stub_app.url)
    yield page
    page.context.close()


@pytest.fixture(scope="module")
def sequential_app(tmp_path_factory):
    running = start_app(tmp_path_factory, "sequential", args=("--schedule", "sequential")).ready()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def default_pair_app(tmp_path_factory):
    running = start_app(tmp_path_factory, "default-pair", catalog=default_pair_catalog()).ready(timeout=180)
    yield running
    running.stop()


def pick(page: Page, elem_id: str, option_prefix: str) -> None:
    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option", name=re.compile("^" + re.escape(option_prefix))).first.click()


def snapshot(page: Page) -> list[str]:
    """Both panes' latest answers and stopwatch lines, read in one go."""
    return page.evaluate("""() => {
        const bot = id => { const m = document.querySelectorAll(`#${id} [data-testid='bot']`);
                            return m.length ? m[m.length - 1].innerText : ""; };
        return [bot('chat-a'), bot('chat-b'), document.querySelector('#metrics-a').innerText,
                document.querySelector('#metrics-b').innerText]; }""")


def saw_both_streaming(page: Page, timeout: float = 120, trace: bool = False):
    """Watch one turn to its end: was there a moment where both panes held text and neither was finished?
    With ``trace``, also return what was seen: (characters in A, in B, A answering?, B answering?) changes."""
    seen, deadline, history = False, time.time() + timeout, []
    while time.time() < deadline:
        a, b, metrics_a, metrics_b = snapshot(page)
        state = (len(a.strip("… ")), len(b.strip("… ")), "answering" in metrics_a, "answering" in metrics_b)
        if not history or history[-1] != state:
            history.append(state)
        if all(state):
            seen = True
        # The vote buttons unlock when both answers are done. (Not "#reveal has text": while the turn is
        # pending, Gradio writes its own "processing | 0.1s" into every output, that line included.)
        if page.locator("#vote-a").is_enabled():
            return (seen, history) if trace else seen
        time.sleep(0.05)
    raise AssertionError(f"the turn did not finish; saw {history[-12:]}")


def open_settings(page: Page) -> None:
    """Open the generation settings accordion and give it a person's reaction time before typing.

    Gradio re-syncs an accordion's children a few milliseconds after it opens, from a copy of their values
    read before; a value typed inside that window is overwritten (seen in 5 of 20 fresh pages when
    Playwright typed at once, 0 of 20 after 300 ms). No person types that fast."""
    page.locator("#settings").click()
    expect(page.locator("#max-new-tokens input[type='number']")).to_be_visible()
    page.wait_for_timeout(300)


def set_max_tokens(page: Page, value: int) -> None:
    """Open the generation settings accordion and type a max-new-tokens value, as a person does
    (type, then leave the box), and wait until the slider took it."""
    open_settings(page)
    number = page.locator("#max-new-tokens input[type='number']")
    number.fill(str(value))
    number.press("Tab")
    expect(page.locator("#max-new-tokens input[type='range']")).to_have_value(str(value))


def assert_picker_offers(page: Page, offered: str, not_offered: str) -> None:
    """Open model A's picker as a person does: a model matching ``offered`` is listed, none matching
    ``not_offered`` (regular expressions on the option's name); then close it."""
    page.locator("#model-a input").click()
    expect(page.get_by_role("option", name=re.compile(offered))).to_be_visible()
    assert page.get_by_role("option", name=re.compile(not_offered)).count() == 0
    page.keyboard.press("Escape")


def ask(page: Page, question: str) -> None:
    """Send a question and wait until both answers are done (the vote buttons unlock)."""
    asked = page.locator("#chat-a [data-testid='user']").count()
    page.locator("#question textarea").fill(question)
    page.locator("#send").click()
    expect(page.locator("#chat-a [data-testid='user']")).to_have_count(asked + 1, timeout=30_000)
    expect(page.locator("#vote-a")).to_be_enabled(timeout=120_000)


def wait_until(page: Page, condition: str, timeout: float = 30) -> None:
    """Wait until the JavaScript ``condition`` holds in the page. (Playwright's wait_for_function evaluates its
    text with eval, which the page's Content-Security-Policy forbids, as it should.)"""
    wait_for(lambda: page.evaluate(f"() => Boolean({condition})"), timeout, condition)


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


# -- the main flow, on the shipped default pair ------------------------------------------------

def test_default_pair_answers_a_report_puzzle_then_streams_both_at_once(browser, default_pair_app):
    """The shipped Qwen + SmolLM2 pair: a report puzzle picked by category and sent with Enter gets
    real timings, and the vote reveals the reference answer; then, in a new round, a long answer
    streams in both panes at the same moment."""
    page = open_page(browser, default_pair_app.url)
    set_max_tokens(page, 384)
    pick(page, "category", "中文语义 Chinese wordplay")
    pick(page, "preset", "zh-wordplay-4:")
    question = page.locator("#question textarea")
    expect(question).to_have_value(re.compile("^明明明明明白白白喜欢他"))
    question.press("Enter")
    expect(page.locator("#chat-a [data-testid='user']")).to_have_count(1)
    expect(page.locator("#vote-a")).to_be_enabled(timeout=600_000)
    for side in "ab":
        expect(page.locator(f"#metrics-{side}")).to_have_text(METRICS)
    expect(page.locator("#chat-a")).to_contain_text("Qwen2.5-Coder-0.5B-Instruct")
    shot(page, "default-pair-answered")
    page.locator("#vote-a").click()
    expect(page.locator("#reveal")).to_contain_text("白白喜欢明明")
    shot(page, "default-pair-voted")
    stored = default_pair_app.rounds()[-1]
    assert stored["preset_id"] == "zh-wordplay-4" and stored["winner"] == "model_a" and len(stored["turns"]) == 1

    # Both workers are warm now (the first answer pages a model's weights in from disk), and a long
    # story keeps SmolLM2 busy well past Qwen's first token, even on a loaded machine; 160 tokens are
    # seconds of both streaming, and the turn need not run to 512.
    page.locator("#new-round").click()
    expect(page.locator("#chat-a [data-testid='user']")).to_have_count(0)
    expect(page.locator("#reveal")).to_have_text("")
    set_max_tokens(page, 160)
    page.locator("#question textarea").fill(LONG)
    page.locator("#send").click()
    expect(page.locator("#chat-a [data-testid='user']")).to_have_count(1)
    seen, trace = saw_both_streaming(page, timeout=600, trace=True)
    assert seen, f"both panes should hold partial text at the same moment; saw {trace[-12:]}"
    page.context.close()


def test_sequential_schedule_never_streams_both_panes_at_once(browser, app, sequential_app):
    """The both-streaming check can fail: under --schedule sequential it sees no such moment,
    while the default concurrent schedule does, on the same models and question (128 tokens each: seconds of
    streaming, and the sequential run need not wait for two long stories)."""
    results, traces = {}, {}
    for name, running in (("concurrent", app), ("sequential", sequential_app)):
        page = open_page(browser, running.url)
        set_max_tokens(page, 128)
        page.locator("#question textarea").fill(LONG)
        page.locator("#send").click()
        results[name], traces[name] = saw_both_streaming(page, trace=True)
        page.context.close()
    assert results == {"concurrent": True, "sequential": False}, f"(chars A, chars B, A answering, B answering): {traces}"


# -- every control -------------------------------------------------------------------------------

def test_each_vote_button_on_its_own_round_locks_the_buttons(page, app):
    """All four votes, each on a fresh round via New round; after a vote every button is locked
    and the server stored exactly that vote. The settings accordion's max tokens is stored too."""
    set_max_tokens(page, 32)
    expected = {"vote-a": "model_a", "vote-b": "model_b", "vote-tie": "tie", "vote-bothbad": "tie (bothbad)"}
    for button, winner in expected.items():
        page.locator("#new-round").click()
        expect(page.locator("#chat-a [data-testid='bot']")).to_have_count(0)
        ask(page, f"Name a color. ({button})")
        page.locator(f"#{button}").click()
        expect(page.locator("#reveal")).to_contain_text("You voted")
        for other in VOTES:
            expect(page.locator(f"#{other}")).to_be_disabled()
        stored = next(r for r in reversed(app.rounds()) if r["turns"][0]["question"].endswith(f"({button})"))
        assert stored["winner"] == winner and stored["settings"]["max_new_tokens"] == 32
        assert all(t[s]["output_tokens"] <= 32 for t in stored["turns"] for s in "ab")
    shot(page, "four-votes")


def test_generation_settings_reach_the_models_and_are_stored(stub_page, stub, stub_app):
    """Every control in the settings accordion: temperature, top-p, max tokens and the system prompt
    are sent to both models and stored with the round."""
    open_settings(stub_page)
    for elem, value in (("temperature", "0.3"), ("top-p", "0.5"), ("max-new-tokens", "48")):
        box = stub_page.locator(f"#{elem} input[type='number']")
        box.fill(value)
        box.press("Tab")
        expect(stub_page.locator(f"#{elem} input[type='range']")).to_have_value(value)
    stub_page.locator("#system-prompt textarea").fill("Answer like a pirate.")
    ask(stub_page, "settings check")
    for request in stub.requests[-2:]:
        assert (request["temperature"], request["top_p"], request["max_tokens"]) == (0.3, 0.5, 48)
        assert request["messages"][0] == {"role": "system", "content": "Answer like a pirate."}
    stored = stub_app.rounds()[-1]["settings"]
    assert stored == {"temperature": 0.3, "top_p": 0.5, "max_new_tokens": 48, "system_prompt": "Answer like a pirate."}


def test_new_round_empties_the_panes_and_starts_a_new_round(page, app):
    """Without New round a second question is a follow-up in the same round; after it, a new round."""
    ask(page, "Say one word. (first)")
    ask(page, "Say another word. (follow-up)")
    follow = app.rounds()[-1]
    assert [t["question"] for t in follow["turns"]] == ["Say one word. (first)", "Say another word. (follow-up)"]
    page.locator("#new-round").click()
    for pane in ("chat-a", "chat-b"):
        expect(page.locator(f"#{pane} [data-testid='bot']")).to_have_count(0)
        expect(page.locator(f"#{pane} [data-testid='user']")).to_have_count(0)
    expect(page.locator("#metrics-a")).to_contain_text("Time to first token — · total —")
    ask(page, "Say a third word. (after new round)")
    latest = app.rounds()[-1]
    assert latest["id"] != follow["id"] and len(latest["turns"]) == 1


def test_mode_switch_and_model_pickers(page, app):
    """Blind hides the pickers and names the panes Model A/B; back to named restores them; changing
    each dropdown renames its pane, clears the round, and the next round uses the picked models."""
    ask(page, "Say hi.")
    page.get_by_label("Battle (blind)").check()
    expect(page.locator("#model-a")).to_be_hidden()
    expect(page.locator("#blind-hold")).to_be_visible()
    expect(page.locator("#chat-a [data-testid='bot']")).to_have_count(0)
    expect(page.locator("#chat-a")).to_contain_text("Model A")
    page.get_by_label("Side by side (named)").check()
    expect(page.locator("#model-a")).to_be_visible()
    expect(page.locator("#chat-a")).to_contain_text("Smol A")
    pick(page, "model-a", "Smol B")
    expect(page.locator("#chat-a")).to_contain_text("Smol B")
    pick(page, "model-b", "Smol A")
    expect(page.locator("#chat-b")).to_contain_text("Smol A")
    ask(page, "Say bye. (swapped)")
    stored = app.rounds()[-1]
    assert (stored["model_a"], stored["model_b"]) == ("smol-b", "smol-a")


def test_blind_battle_hides_names_and_timings_then_reveals_and_rates(page):
    """Before the vote no pane label, stopwatch line or reveal names a model or shows a figure;
    after it the names and timings appear, and the leaderboard counts the battle but, with fewer than ten,
    says so instead of showing ratings."""
    page.get_by_label("Battle (blind)").check()
    page.locator("#question textarea").fill("Name a fruit.")
    page.locator("#send").click()
    expect(page.locator("#vote-tie")).to_be_enabled(timeout=60_000)
    for side in "ab":
        metrics = page.locator(f"#metrics-{side}").inner_text()
        assert "hidden" in metrics and not re.search(r"\d", metrics), metrics
        assert page.locator(f"#chat-{side} label, #chat-{side} [data-testid='block-label']").first.inner_text() \
            == f"Model {side.upper()}"
    expect(page.locator("#reveal")).to_have_text("")  # waits out Gradio's "processing" line of the last update
    page.locator("#vote-tie").click()
    expect(page.locator("#reveal")).to_contain_text(re.compile(r"Model A was Smol [AB]"))
    expect(page.locator("#reveal")).to_contain_text(re.compile(r"time to first token \d+\.\d+ s"))
    shot(page, "blind-after-vote")
    page.get_by_role("tab", name="Leaderboard").click()
    page.locator("#refresh-leaderboard").click()
    # The API tests may have voted first on this app: with ten or more the ratings show, with fewer the note
    # says ratings need ten.
    note = page.locator("#board-note")
    expect(note).to_contain_text(re.compile(r"\d+ rated battle\(s\) in this selection"))
    expect(page.locator("#leaderboard-empty")).to_be_hidden()
    if "Only " in note.inner_text():  # (not startswith: Gradio may still show "processing | 0.2s" above it)
        expect(page.locator("#ratings-plot")).to_be_hidden()
    else:
        expect(page.locator("#leaderboard-table")).to_contain_text("Smol A")


def test_blind_hold_shows_both_answers_only_when_both_are_finished(page):
    """With the page setting on, no answer text is shown while either model is still answering (and the
    held state was seen at all: a turn too quick to watch would prove nothing)."""
    set_max_tokens(page, 128)
    page.get_by_label("Battle (blind)").check()
    page.locator("#blind-hold input").check()
    page.locator("#question textarea").fill(LONG)
    page.locator("#send").click()
    held = 0
    while not page.locator("#vote-a").is_enabled():
        a, b, metrics_a, _ = snapshot(page)
        if "appear together" in metrics_a:
            held += 1
            assert a.strip("… ") == "" and b.strip("… ") == "", "text shown before both finished"
        time.sleep(0.05)
    a, b, *_ = snapshot(page)
    assert held and a.strip("… ") and b.strip("… ")


def test_stop_during_an_answer_keeps_it_and_allows_a_vote(page):
    page.locator("#question textarea").fill(LONG)
    page.locator("#send").click()
    wait_until(page, "document.querySelector('#chat-a [data-testid=bot]')?.innerText.length > 20")
    page.locator("#stop").click()
    expect(page.locator("#chat-a")).to_contain_text("(stopped)", timeout=15_000)
    expect(page.locator("#vote-b")).to_be_enabled()
    page.locator("#vote-b").click()
    expect(page.locator("#reveal")).to_contain_text("You voted: B better")


def test_regenerate_twice_then_vote_and_regenerate_is_refused_after_it(stub_page, stub, stub_app):
    """A person asks, presses Regenerate twice (each time both panes answer again, with a new seed that the stub
    model names in its answer), votes, and presses Regenerate once more: refused with a message saying why. The
    stored round keeps all three attempts; the vote is on the third."""
    ask(stub_page, "regenerate me")
    seeds = []
    for attempt in (2, 3):
        stub_page.locator("#regenerate").click()
        expect(stub_page.locator("#metrics-a")).to_contain_text(f"attempt {attempt}", timeout=30_000)
        expect(stub_page.locator("#vote-a")).to_be_enabled(timeout=30_000)
        shown = stub_page.locator("#chat-a [data-testid='bot']").last.inner_text()
        seeds.append(int(shown.split("(seed ")[1].rstrip(")")))
        expect(stub_page.locator("#chat-b [data-testid='bot']").last).to_contain_text(f"(seed {seeds[-1]})")
        expect(stub_page.locator("#chat-a [data-testid='user']")).to_have_count(1)  # the same turn, answered again
    assert seeds[0] != seeds[1]
    stub_page.locator("#vote-a").click()
    expect(stub_page.locator("#reveal")).to_contain_text("You voted: A better")
    stub_page.locator("#regenerate").click()
    expect(stub_page.get_by_text("You have voted on these answers")).to_be_visible(timeout=10_000)
    expect(stub_page.locator("#chat-a [data-testid='bot']").last).to_contain_text(f"(seed {seeds[1]})")
    stored = stub_app.rounds()[-1]
    turn = stored["turns"][-1]
    assert stored["winner"] == "model_a" and turn["attempt"] == 3 and turn["seed"] == seeds[1]
    assert [e["seed"] for e in turn["earlier"]] == [None, seeds[0]]
    assert "(seed" not in turn["earlier"][0]["a"]["text"] and f"(seed {seeds[1]})" in turn["a"]["text"]


def test_regenerate_while_answering_stops_the_old_answers_first(stub_page, stub_app):
    """Regenerate pressed while both answers still stream: the old answers stop (kept as the first attempt,
    stopped) and both panes answer again; the round stays the same."""
    stub_page.locator("#question textarea").fill("LONG 60")
    stub_page.locator("#send").click()
    wait_until(stub_page, "document.querySelector('#chat-a [data-testid=bot]')?.innerText.includes('w3')")
    stub_page.locator("#regenerate").click()
    expect(stub_page.locator("#metrics-b")).to_contain_text("attempt 2", timeout=30_000)
    expect(stub_page.locator("#vote-a")).to_be_enabled(timeout=60_000)
    stored = stub_app.rounds()[-1]
    assert stored["turns"][-1]["earlier"][0]["a"]["stopped"] and stored["turns"][-1]["attempt"] == 2
    assert not stored["turns"][-1]["a"]["stopped"] and "w59" in stored["turns"][-1]["a"]["text"]
    stub_page.locator("#new-round").click()


def test_stop_before_the_first_token(stub_page):
    """Stop works while the server has sent nothing yet (prefill, or a worker coming back)."""
    stub_page.locator("#question textarea").fill("SLOW-START answer slowly")
    stub_page.locator("#send").click()
    expect(stub_page.locator("#chat-a [data-testid='user']")).to_have_count(1, timeout=10_000)
    time.sleep(1)
    started = time.time()
    stub_page.locator("#stop").click()
    expect(stub_page.locator("#chat-a")).to_contain_text("(stopped)", timeout=10_000)
    expect(stub_page.locator("#chat-b")).to_contain_text("(stopped)")
    assert time.time() - started < 10


def test_follow_up_sends_each_pane_its_own_history(stub_page, stub):
    """The second request of a round carries that pane's own first answer, not the other pane's."""
    ask(stub_page, "first question")
    ask(stub_page, "second question")
    last = {r["model"]: r["messages"] for r in stub.requests[-2:]}
    for model in ("stub-a", "stub-b"):
        assert last[model] == [{"role": "user", "content": "first question"},
                               {"role": "assistant", "content": f"{model} heard: first question"},
                               {"role": "user", "content": "second question"}]


def test_images_in_questions_and_answers_are_never_fetched(stub_page, stub):
    """A Markdown image or <img> in a question or an answer shows as a link; the browser requests nothing."""
    origin = stub.base_url.rsplit("/v1", 1)[0]
    stub.fetches.clear()
    ask(stub_page, f"IMAGE {origin}/answer.png and ![q]({origin}/question.png) <img src='{origin}/tag.png'>")
    time.sleep(2)
    assert stub.fetches == []
    expect(stub_page.locator("#chat-a a", has_text="🖼 tracker")).to_have_count(1)
    assert stub_page.locator("#chat-a img[src*='answer.png'], #chat-a img[src*='question.png']").count() == 0


IMAGE_FORMS = {  # every way Markdown can make an image; {o} is the pixel server's address
    "reference definition": "![x]\n\n[x]: {o}/ref.png",
    "title in parentheses": "![x]({o}/title.png (t))",
    "brackets in the description": "![a [b] c]({o}/nested.png)",
    "escaped bracket": "![a\\]b]({o}/escaped.png)",
    "angle-bracket address": "![x](<{o}/angle.png>)",
    "html tag": "<img src=\"{o}/tag.png\">",
    "diagram": "```mermaid\ngraph TD\n  A@{{ img: \"{o}/mermaid.png\", label: \"x\" }}\n```",
}


@pytest.mark.parametrize("form", IMAGE_FORMS)
def test_every_image_form_in_a_question_and_an_answer_stays_a_link(stub_page, stub, form):
    """The question holds the image and the stub model repeats it in its answer: both panes show the question
    and the answer, and the browser asks the pixel server (the stub) for nothing: no <img> points at it."""
    origin = stub.base_url.rsplit("/v1", 1)[0]
    stub.fetches.clear()
    ask(stub_page, "ECHO " + IMAGE_FORMS[form].format(o=origin))
    time.sleep(1)
    assert stub.fetches == [], f"{form}: the browser fetched {stub.fetches}"
    for pane in ("chat-a", "chat-b"):
        assert stub_page.locator(f"#{pane} img[src*='127.0.0.1']").count() == 0, f"{form}: an image in {pane}"
        expect(stub_page.locator(f"#{pane} [data-testid='bot']").last).to_contain_text(origin.split("//")[1])
    if form not in ("html tag", "diagram"):  # those show as text; every Markdown image becomes a link
        expect(stub_page.locator("#chat-b [data-testid='bot'] a", has_text="🖼")).to_have_count(1)
    stub_page.locator("#new-round").click()


def _mixed(n: int) -> str:
    sample = "`a` ![x](y) [z] <b> *e* _f_ ~~s~~ | t | \n> q [r]: u\n1. ![i][r]\n```\n<c>\n```\n"
    return (sample * (n // len(sample) + 1))[:n]


HOSTILE = {  # 7,995 characters each: with "ECHO " the question is at the 8,000 limit
    "backticks": "`" * 7995, "brackets": "[" * 7995, "asterisks": "*" * 7995, "underscores": "_" * 7995,
    "image openers": "![" * 3997, "angle brackets": "<" * 7995,
    "nested lists": "".join("  " * (i % 60) + "- x\n" for i in range(2000))[:7995], "mixed": _mixed(7995),
}


BUSY = "while True:\n    pass\n"  # a CPU-bound process at normal priority: other work on the machine


@pytest.fixture
def busy_machine():
    """Two CPU-bound processes beside the app for the test's duration: on two cores, a busy machine."""
    burners = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(2)]
    yield
    for burner in burners:
        burner.kill()
        burner.wait()


@pytest.mark.parametrize("name", HOSTILE)
def test_a_hostile_question_and_answer_never_freeze_the_server(stub_page, stub_app, name, busy_machine):
    """A question of Markdown's worst cases, answered by a model that repeats it, while two CPU-bound processes keep
    both cores busy: while both answers stream and render in this page, the app's event loop never stalls for
    0.5 s (its own monitor, /arena/health), and another client's request is answered within a second (that figure
    includes this test process's own waits for a core). Before, 1,200 backticks blocked every visitor for 45 s
    (a regular expression on the event loop), and under load a stream stalled the loop for 2 s (Gradio built a
    new component and its JSON schema on the loop for every property update)."""
    import threading

    import httpx

    latencies, done = [], threading.Event()

    def probe():
        while not done.is_set():
            started = time.perf_counter()
            httpx.get(stub_app.url + "gradio_api/info", timeout=60)
            latencies.append(time.perf_counter() - started)
            time.sleep(0.05)
    thread = threading.Thread(target=probe, daemon=True)
    started = time.time()
    thread.start()
    try:
        stub_page.locator("#question textarea").fill("ECHO " + HOSTILE[name])
        stub_page.locator("#send").click()
        expect(stub_page.locator("#vote-a")).to_be_enabled(timeout=120_000)
    finally:
        done.set()
        thread.join(60)
    seconds = time.time() - started + 1
    stall = httpx.get(f"{stub_app.url}arena/health?seconds={seconds:.0f}", timeout=30).json()["loop_stall_max_s"]
    assert stall < 0.5, f"{name}: the event loop stalled {stall:.2f} s"
    assert len(latencies) > 5 and max(latencies) < 1.0, f"{name}: slowest answer {max(latencies):.2f} s"
    expect(stub_page.locator("#chat-b [data-testid='bot']")).to_have_count(1)  # rendered (7,995 backticks: an empty code block)
    stub_page.locator("#new-round").click()


def test_after_a_vote_the_next_question_starts_a_new_round(page, app):
    """A person votes and types the next question: the panes clear and both models answer it in a new round,
    with no error anywhere (before, the question was refused with "not open" and every pane showed an error)."""
    ask(page, "Name a season. (before the vote)")
    page.locator("#vote-tie").click()
    expect(page.locator("#reveal")).to_contain_text("You voted: Tie")
    voted = app.rounds()[-1]
    page.locator("#question textarea").fill("Name a planet. (after the vote)")
    page.locator("#question textarea").press("Enter")
    expect(page.locator("#vote-a")).to_be_enabled(timeout=120_000)
    for pane in ("chat-a", "chat-b"):
        expect(page.locator(f"#{pane} [data-testid='user']")).to_have_count(1)
        expect(page.locator(f"#{pane} [data-testid='user']")).to_contain_text("after the vote")
    expect(page.locator(".toast-body, [data-testid='toast-body']")).to_have_count(0)
    expect(page.locator("#reveal")).to_have_text("")
    latest = app.rounds()[-1]
    assert latest["id"] != voted["id"] and latest["winner"] is None and len(latest["turns"]) == 1
    assert len(next(r for r in app.rounds() if r["id"] == voted["id"])["turns"]) == 1


def test_copy_button_copies_the_answer_and_panes_have_no_clear_button(browser, stub_app):
    """The copy icon under an answer puts that answer on the clipboard; the built-in trash icon,
    which would blank a pane but keep the round, is not offered (New round is the one way)."""
    page = open_page(browser, stub_app.url)
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    ask(page, "copy me")
    page.locator("#chat-b [data-testid='bot']").last.hover()
    page.locator("#chat-b button[aria-label='Copy message']").last.click()
    assert page.evaluate("navigator.clipboard.readText()") == "stub-b heard: copy me"
    expect(page.locator("#chat-a button[aria-label='Clear']")).to_be_hidden()
    page.context.close()


def test_html_in_a_question_is_shown_as_text_not_run(page):
    page.locator("#question textarea").fill('<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>hi')
    page.locator("#send").click()
    expect(page.locator("#vote-a")).to_be_enabled(timeout=60_000)
    assert page.evaluate("window.__pwned") is None
    assert page.locator("#chat-a img[src='x']").count() == 0


def test_empty_question_shows_an_error_and_sends_nothing(page):
    page.locator("#send").click()
    expect(page.get_by_text("The question is empty")).to_be_visible(timeout=10_000)
    expect(page.locator("#chat-a [data-testid='user']")).to_have_count(0)


def test_csv_and_jsonl_downloads(page, tmp_path):
    """Both export buttons give a download link for the file holding the vote just cast; the link works once."""
    ask(page, "Which is heavier: a kilogram of feathers or a kilogram of steel? (export)")
    page.locator("#vote-a").click()
    expect(page.locator("#reveal")).to_contain_text("You voted: A better")
    page.get_by_role("tab", name="Export / import").click()
    for button, name in (("export-csv", "votes.csv"), ("export-jsonl", "battles.jsonl")):
        page.locator(f"#{button}").click()
        link = page.locator("#export-file a").first
        expect(link).to_have_text(re.compile(r"^⬇ arena-\w+-[\d-]+\." + name.split(".")[1] + "$"), timeout=15_000)
        with page.expect_download() as download:
            link.click()
        download.value.save_as(tmp_path / name)
        assert download.value.suggested_filename.endswith(name.split(".")[1])
        again = page.request.get(page.url + link.get_attribute("href"))
        assert again.status == 404, "an export link serves its file once"
    rows = list(csv.DictReader(open(tmp_path / "votes.csv", encoding="utf-8-sig")))
    row = [r for r in rows if r["question"].endswith("(export)")][-1]
    assert row["vote"] == "A better" and row["model_a"] == "smol-a" and row["answer_a"]
    battles = [json.loads(line) for line in open(tmp_path / "battles.jsonl", encoding="utf-8")]
    assert any(b["conversation_a"][0]["content"].endswith("(export)") and b["winner"] == "model_a" for b in battles)


def test_import_upload_of_a_good_and_a_malformed_file(page, tmp_path, app):
    """A FastChat battle file is imported and stored; a malformed one is refused with its line number."""
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"model_a": "far-model-1", "model_b": "far-model-2", "winner": "tie", "tstamp": 1.0,
                                "anony": True, "conversation_a": [{"role": "user", "content": "q"},
                                                                  {"role": "assistant", "content": "a1"}],
                                "conversation_b": [{"role": "user", "content": "q"},
                                                   {"role": "assistant", "content": "a2"}]}) + "\n")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(good.read_text() + "{not json\n")
    page.get_by_role("tab", name="Export / import").click()
    page.locator("#import-file input[type='file']").set_input_files(str(good))
    expect(page.locator("#import-result")).to_contain_text("Imported 1 battle(s)", timeout=15_000)
    assert any(r["model_a"] == "far-model-1" for r in app.rounds())
    page.locator("#import-file button[aria-label='Clear']").first.click()
    page.locator("#import-file input[type='file']").set_input_files(str(bad))
    expect(page.locator("#import-result")).to_contain_text("line 2", timeout=15_000)
    expect(page.locator("#import-result")).to_contain_text("Nothing was imported")


def test_every_static_text_is_translated_in_the_browser(browser, app):
    """gr.I18n renders each label in the browser's language on every tab: no line of the page is a bare
    text key (as when the translations are not handed to Gradio's launch)."""
    keys = {key for key, text in TEXTS["en"].items() if key != text}
    for locale in ("en-US", "zh-CN"):
        page = open_page(browser, app.url, locale=locale)
        page.locator("#settings").click()
        for tab in range(4):
            page.get_by_role("tab").nth(tab).click()
            lines = {line.strip() for line in page.locator("body").inner_text().splitlines()}
            assert not lines & keys, f"{locale}, tab {tab}: untranslated {sorted(lines & keys)}"
        page.context.close()


def test_chinese_browser_gets_chinese_page_and_the_switch_changes_it(browser, app):
    """A zh-CN browser sees Chinese labels, status and errors; the language switch turns them English."""
    page = open_page(browser, app.url, locale="zh-CN")
    expect(page.locator("#send")).to_have_text("同时发送")
    expect(page.locator("#vote-tie")).to_have_text("平局")
    expect(page.locator("#model-status")).to_contain_text("就绪")
    page.locator("#send").click()
    expect(page.get_by_text("问题为空")).to_be_visible(timeout=10_000)
    shot(page, "chinese")
    page.get_by_label("English").check()
    expect(page.locator("#send")).to_have_text("Send to both")
    expect(page.locator("#model-status")).to_contain_text("ready")
    page.get_by_label("中文").check()
    expect(page.locator("#new-round")).to_have_text("新一轮")
    page.context.close()


# The quality reference's entry, loaded at start: converting the GGUF to fp32 takes long enough to read its phases.
LOADING_FP32 = SMOL_FP32.replace("id: smol-fp32", "id: smol-loading").replace("    autostart: false\n", "")
# What a status line may keep in Latin letters on the zh page: names, files, formats and units.
KEPT_AS_WRITTEN = re.compile(r"[\w.-]+\.gguf|Smol fp32|Stub [AB]|https?://\S+|INT4|fp32|GGUF|ITREX|HF|GB|MB|B\b")


def test_a_chinese_page_shows_loading_models_in_chinese(browser, stub, tmp_path_factory):
    """A zh-CN visitor watches a model load (SmolLM2 read from its GGUF into fp32 by transformers, about half a
    minute): every status line is Chinese throughout; only names, files and formats stay as written (before,
    "加载中（11 秒）: loading full-precision weights from …" and similar)."""
    app = start_app(tmp_path_factory, "loading", catalog=stub.catalog() + LOADING_FP32).ready()
    page = open_page(browser, app.url, locale="zh-CN")
    seen = set()
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            row = next((r for r in page.locator("#model-status tr").all_inner_texts() if "Smol fp32" in r), "")
            seen.add(" ".join(row.split()))
            if "就绪" in row:
                break
            time.sleep(0.3)
    finally:
        page.context.close()
        app.stop()
    loading = [r for r in seen if "加载中" in r]
    assert any("加载全精度权重" in r for r in loading), seen
    english = [r for r in seen if re.search(r"[A-Za-z]{2,}[ ,;:()]+[A-Za-z]{2,}", KEPT_AS_WRITTEN.sub("", r))]
    assert not english, english


def test_batch_tab_runs_presets_shows_progress_and_offers_the_report(page, app, tmp_path):
    """From the Batch tab: pick a preset and a grader, start, watch the progress line move, get the
    report; the Leaderboard tab then shows the graders' own table beside the human one, and the pass rates."""
    page.get_by_role("tab", name="Batch").click()
    expect(page.locator("#batch-status")).to_contain_text("No batch run yet")
    page.locator("#batch-presets").get_by_label(re.compile(r"· en-common-2:")).check()
    pick(page, "batch-judge", "Smol A")
    page.locator("#batch-start").click()
    expect(page.locator("#batch-status")).to_contain_text(re.compile(r"Running|Done"), timeout=30_000)
    expect(page.locator("#batch-status")).to_contain_text("Done", timeout=600_000)
    link = page.locator("#batch-report a").first
    expect(link).to_be_visible(timeout=15_000)
    with page.expect_download() as download:
        link.click()
    download.value.save_as(tmp_path / "report.html")
    report = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "Which is heavier" in report and "Smol A" in report and "Smol B" in report
    shot(page, "batch-done")
    page.get_by_role("tab", name="Leaderboard").click()
    page.locator("#refresh-leaderboard").click()
    # The graders' own table, beside (not mixed into) the human one, and the pass rates: the preset has
    # assertions, so both models' answers are graded whatever the grader model says.
    expect(page.locator("#judge-table")).to_contain_text("judged pairs")
    expect(page.locator("#judge-rates")).to_contain_text("Smol A")
    expect(page.locator("#judge-rates")).to_contain_text("Smol B")


def test_leaderboard_shows_what_int4_costs_after_a_quality_run(page, app, smol_quality_run):
    """A person runs `python -m arena quality` beside the running app (real workers: SmolLM2 Q4_1 in llama.cpp
    against its fp32 transformers copy, which the page never offered), then opens the Leaderboard tab and
    refreshes: the quality table lists both with their figures, and the quality × speed × memory chart is drawn.
    The reference's scores come from smol_quality_run's cache, as they would from an earlier run."""
    from ..conftest import QUALITY_TOKENS, copy_reference_cache, run_quality

    assert_picker_offers(page, "^Smol A", not_offered="^Smol fp32")  # autostart: false
    copy_reference_cache(smol_quality_run, app.tmp / "data")
    done = run_quality("--catalog", str(app.models_file), "--models", "smol-a", "--reference", "smol-fp32",
                       "--tokens", QUALITY_TOKENS, "--data-dir", str(app.tmp / "data"))
    assert done.returncode == 0, done.stderr
    page.get_by_role("tab", name="Leaderboard").click()
    page.locator("#refresh-leaderboard").click()
    expect(page.locator("#quality-intro")).to_contain_text("Smol fp32", timeout=20_000)
    table = page.locator("#quality-table")
    expect(table).to_contain_text("Smol fp32 (reference)")
    expect(table).to_contain_text("Smol A")
    expect(table).to_contain_text(re.compile(r"0\.\d{4} \[0\.\d{4}, 0\.\d{4}\]"))  # mean KL with its interval
    expect(page.locator("#quality-plot img, #quality-plot svg").first).to_be_visible(timeout=20_000)
    page.locator("#quality-plot").scroll_into_view_if_needed()
    shot(page, "leaderboard-quality")


@pytest.fixture(scope="module")
def board_app(tmp_path_factory):
    """An app whose catalog retires 'old-md' (and has never heard of 'gone-plain'), with 24 battles between the
    two imported from a battle file with --trust-import, as a person brings an older arena's votes."""
    from ..conftest import ROOT
    from ..ratings.test_board import battle_file, write_prompts

    retired = """
  - id: old-md
    name: "Old MD"
    engine: openai
    endpoint: {base_url: "http://127.0.0.1:9/v1", model: old}
    quantization: none
    license: test
    retired: true
"""
    running = start_app(tmp_path_factory, "board", extra_models=retired)
    prompts = running.tmp / "prompts.yaml"
    write_prompts(prompts)
    done = subprocess.run([sys.executable, "-m", "arena", "import", str(battle_file(running.tmp / "b.jsonl", 24,
                          ("old-md", "gone-plain"))), "--trust-import", "--models", str(running.models_file),
                          "--prompts", str(prompts), "--data-dir", str(running.tmp / "data")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    yield running.ready()
    running.stop()


def test_leaderboard_by_category_and_language_with_style_control_and_retired_models(browser, board_app):
    """On a leaderboard of 24 imported battles a person sees the plain and style-controlled tables, the style
    coefficients and both models marked retired (one retired in models.yaml, one gone from it) but not offered in
    the pickers; picks Chinese and sees the 12 Chinese battles; adds the math category and is told there are none."""
    page = open_page(browser, board_app.url)
    assert_picker_offers(page, "^Smol A", not_offered="Old MD")
    page.get_by_role("tab", name="Leaderboard").click()
    page.locator("#refresh-leaderboard").click()
    expect(page.locator("#board-note")).to_contain_text("24 rated battle(s) in this selection", timeout=30_000)
    table = page.locator("#leaderboard-table")
    expect(table).to_contain_text("Old MD (retired)")
    expect(table).to_contain_text("gone-plain (retired)")
    expect(page.locator("#style-table")).to_contain_text("rank change")
    expect(page.locator("#style-coefficients")).to_contain_text("length (characters)")
    expect(page.locator("#ratings-plot img, #ratings-plot svg").first).to_be_visible(timeout=20_000)
    shot(page, "leaderboard-style-control")
    pick(page, "board-language", "Chinese")
    expect(page.locator("#board-note")).to_contain_text("12 rated battle(s) in this selection", timeout=30_000)
    pick(page, "board-category", "math")
    expect(page.locator("#leaderboard-empty")).to_be_visible(timeout=30_000)
    expect(page.locator("#board-note")).to_have_text("")
    pick(page, "board-category", "All")
    pick(page, "board-language", "All")
    expect(page.locator("#board-note")).to_contain_text("24 rated battle(s)", timeout=30_000)
    page.context.close()


FACTS = [("Why does ice float on water?", "Ice is less dense than liquid water.", "Ice is less dense than water.",
          "Ice is heavier than water."),
         ("Why do we see lightning before we hear thunder?", "Light travels much faster than sound.",
          "Light is faster than sound.", "Thunder happens later than the lightning strike."),
         ("Why is the sea salty?", "Rivers carry dissolved minerals from rocks into the sea.",
          "Rivers wash dissolved minerals from rocks into it.", "Fish make the water salty."),
         ("What makes leaves green?", "Chlorophyll, which absorbs red and blue light.", "Chlorophyll.",
          "They reflect the colour of the sky."),
         ("Why do metals feel cold to the touch?", "They conduct heat away from the skin quickly.",
          "Metal conducts heat away from your hand fast.", "Metals are always colder than the air."),
         ("What causes the seasons on Earth?", "The tilt of Earth's axis.", "Earth's axis is tilted.",
          "Earth is closer to the Sun in summer."),
         ("Why does bread rise?", "Yeast makes carbon dioxide gas that gets trapped in the dough.",
          "Yeast gives off carbon dioxide that the dough traps.", "The oven pulls the dough upwards."),
         ("Why does a spoon look bent in water?", "Light refracts as it passes from water into air.",
          "Refraction of light between water and air.", "The water softens the metal."),
         ("What keeps the Moon in orbit?", "Earth's gravity.", "The gravity of the Earth.",
          "The Moon's own engines."),
         ("Why do onions make people cry?", "They release a sulfur compound that irritates the eyes.",
          "A sulfur gas from the cut onion irritates the eyes.", "Onions are sad.")]


def own_labels(path) -> int:
    """A person's labels file of open answers (no rule decides them): per fact two right and three wrong."""
    rows = []
    for n, (question, reference, right, wrong) in enumerate(FACTS):
        for k, (answer, label) in enumerate([(right, "correct"), (f"In short: {right}", "correct"), (wrong, "wrong"),
                                             (f"In short: {wrong}", "wrong"), ("I am not sure.", "wrong")]):
            rows.append({"id": f"f{n}-{k}", "question_id": f"fact-{n}", "language": "en", "question": question,
                         "reference": reference, "answer": answer, "label": label})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return len(rows)


def test_review_labels_graded_answers_and_grader_check_measures_them(page, app, tmp_path):
    """A person reviews a stored run's grades in the Batch tab: each answer shows the grade that counted and what
    decided it, a model's HTML stays text, the four labels are stored, and `grader-check` then measures a real
    grader (SmolLM2, started for it) against the two labels it is asked about (the checkable ones are the rule's):
    too few to calibrate with. With 50 more of the person's labels from a file it fits and stores the calibration
    that the next batch runs graded by it use (test_batch.py, test_calibrated_runs.py)."""
    import sqlite3

    from arena.storage.store import Store

    from ..batch.test_review import PRESETS, stored_run

    answers = {("m1", "sky"): 'Air scatters blue light most. <img src=x onerror="window.pwned=1">',
               ("m2", "sky"): "The sea reflects onto it.", ("m1", "times"): "6 × 7 = \\boxed{42}",
               ("m2", "times"): "It is 48."}
    store = Store(app.tmp / "data" / "arena.db")
    stored_run(store, "review-run", PRESETS[:2], answers)
    page.get_by_role("tab", name="Batch").click()
    pick(page, "review-run", "review-run")
    card = page.locator("#review-card")
    expect(card).to_contain_text("0 of 4")
    shot(page, "batch-review")
    verdicts = {"light most": ("review-correct", "correct"), "sea reflects": ("review-wrong", "wrong"),
                "= 42": ("review-correct", "correct"), "It is 48": ("review-wrong", "wrong")}
    for done in range(1, 5):
        shown = card.inner_text()
        cue = next(c for c in verdicts if c in shown.replace("\\", "").replace("boxed{42}", "42"))
        if cue == "It is 48":
            assert "read 48 where the reference says 42" in shown
        if cue == "sea reflects":
            assert "no grader decided it" in shown
        page.locator(f"#{verdicts[cue][0]}").click()
        expect(card).to_contain_text(f"{done} of 4")
        expect(card).to_contain_text(f"Saved: {verdicts[cue][1]}")
    expect(card).to_contain_text("Every answer of this run with a reference is reviewed")
    assert page.evaluate("window.pwned") is None and card.locator("img").count() == 0
    page.get_by_role("radio", name="中文").check()
    expect(page.locator("#review-next")).to_have_text("下一个回答")
    page.locator("#review-next").click()
    expect(card).to_contain_text("这次运行中有参考答案的回答都已复核")
    labels = {r["answer"]: r["label"] for r in store.answer_labels("review-run")}
    store.close()
    assert labels == {text: verdicts[next(c for c in verdicts if c in text.replace("\\boxed{42}", "42"))][1]
                      for text in answers.values()}
    checked = subprocess.run([sys.executable, "-m", "arena", "grader-check", "--graders", "smol-a", "--without-heldout",
                              "--models", str(app.models_file), "--data-dir", str(app.tmp / "data")],
                             capture_output=True, text=True, timeout=600)
    assert checked.returncode == 0, checked.stderr
    assert "2 from the Batch tab's review" in checked.stdout and "| en | 2 | 1 | 1 |" in checked.stdout, checked.stdout
    assert "en: 2 of your own labels graded by smol-a; 48 more" in checked.stdout
    data = tmp_path / "data"  # a copy (with what is still in the write-ahead log): the app's runs keep the defaults
    data.mkdir()
    with sqlite3.connect(app.tmp / "data" / "arena.db") as source, sqlite3.connect(data / "arena.db") as copy:
        source.backup(copy)
    n = own_labels(tmp_path / "labels.jsonl")
    checked = subprocess.run([sys.executable, "-m", "arena", "grader-check", "--graders", "smol-a", "--without-heldout",
                              "--labels", str(tmp_path / "labels.jsonl"), "--models", str(app.models_file),
                              "--data-dir", str(data)], capture_output=True, text=True, timeout=600)
    assert checked.returncode == 0, checked.stderr
    assert f"en: stored your calibration of smol-a from {n + 2} labels" in checked.stdout, checked.stdout
    store = Store(data / "arena.db")
    stored = store.calibrations("smol-a")["en"]
    store.close()
    assert (stored["labels"], stored["positives"], stored["questions"]) == (n + 2, 21, 11)
    assert ("it decides pass/fail there" in checked.stdout) == (stored["refused"] is None)
