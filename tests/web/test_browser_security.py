"""Browser: what safe_markdown emits means nothing dangerous to the browser's own Markdown reader, and what slips
past it still cannot run.

- Texts drawn from the hostile-Markdown grammar (tests/markdown_grammar.py) go through safe_markdown and then into
  the page's own components (the arena's chat pane, ``page.answer_pane``, and ``gr.Markdown`` as the reveal and
  status panels use it) in Debian Chromium, served behind the app's HTTP guard. The rendered DOM must hold no
  raw HTML (only the elements Markdown itself makes), no image, no SVG or MathML outside Gradio's own icons and
  KaTeX, no form, no ``on*`` attribute and no link to anything but http(s), mailto or a relative address.
- The Content-Security-Policy stops an inline handler, an injected script and a ``javascript:`` link that did get
  into the page (as the review's table XSS did).
"""
from __future__ import annotations

import os
import queue
import time

import gradio as gr
import pytest
from hypothesis import HealthCheck, given, settings
from playwright.sync_api import expect

from arena.app import launch
from arena.web import http_guard
from arena.web.components import answer_pane, text_panel
from arena.web.safe_markdown import safe_markdown

from ..markdown_grammar import documents

BROWSER_EXAMPLES = int(os.environ.get("ARENA_FUZZ_BROWSER_EXAMPLES", "1500"))
PER_BATCH = 100  # chat messages per page update (each its own Markdown rendering)
MARKDOWNS = 10   # gr.Markdown components per update

# Runs in the page: every rendered Markdown block (span.md) checked against what Markdown can make.
DOM_CHECK = r"""(root) => {
  const MARKDOWN = new Set(["P","EM","STRONG","DEL","S","CODE","PRE","A","UL","OL","LI","BLOCKQUOTE","H1","H2","H3",
    "H4","H5","H6","TABLE","THEAD","TBODY","TR","TH","TD","HR","BR","SPAN","DIV"]);
  const NEVER = new Set(["a","img","image","use","foreignobject","iframe","object","embed","script","style","form",
    "input","button","textarea","select","video","audio","source","link","meta","base","animate","set"]);
  const URL_ATTRS = ["href","src","xlink:href","action","formaction","srcset","poster","data","background","ping"];
  const safeUrl = v => {  // as tests/markdown_grammar.py's harmless_href: no scheme, or http(s) or mailto
    const scheme = /^([a-z][a-z0-9+.\-]*):/i.exec(v.replace(/[\t\n\r]/g, "").replace(/^[\u0000-\u0020]+/, ""));
    return scheme === null || ["http", "https", "mailto"].includes(scheme[1].toLowerCase()); };
  const found = [];
  document.querySelectorAll(root + " span.md").forEach((md, index) => {
    md.querySelectorAll("*").forEach(el => {
      const note = what => found.push({index, what, html: el.outerHTML.slice(0, 300)});
      const tag = el.tagName, lower = tag.toLowerCase();
      const inKatex = el.closest(".katex, .katex-error") !== null, inCopy = el.closest("button.copy_code_button") !== null;
      for (const attr of el.attributes) {
        const name = attr.name.toLowerCase();
        if (name.startsWith("on")) note(`${lower}[${name}]`);
        if (URL_ATTRS.includes(name) && !safeUrl(attr.value)) note(`${lower}[${name}=${attr.value}]`);
        if (name === "style" && !inKatex) note(`${lower}[style]`);
      }
      if (inCopy) {  // Gradio's copy button on code blocks: its icon and nothing else
        if (!(tag === "BUTTON" && el.classList.contains("copy_code_button")) && !["SPAN","svg","path"].includes(tag))
          note(`${lower} in the copy button`);
      } else if (inKatex) {  // KaTeX draws math with spans, MathML and SVG paths; never links or media
        if (NEVER.has(lower)) note(`${lower} in math`);
      } else if (tag === "INPUT") {  // a GFM task list item
        if (el.type !== "checkbox" || !el.disabled) note("input");
      } else if (!MARKDOWN.has(tag)) {
        note(lower);
      }
      if (tag === "A" && !el.closest("button") && el.getAttribute("href") === null) note("a without href");
    });
  });
  return found;
}"""


@pytest.fixture(scope="module")
def markdown_page(browser):
    """A page of the arena's own components, behind the app's HTTP guard: each click on #next shows the next batch
    of texts from ``batches`` (chat messages and Markdown panels), and #shown counts the batches shown."""
    batches: queue.Queue = queue.Queue()
    with gr.Blocks() as demo:
        chat = answer_pane("harness", "harness-chat")
        panels = [text_panel("", elem_id=f"harness-md-{i}") for i in range(MARKDOWNS)]
        shown = gr.Number(0, elem_id="shown")
        step = gr.Button("next", elem_id="next")

        def show_next(count):
            chat_texts, panel_texts = batches.get_nowait()
            messages = [{"role": "user" if i % 2 else "assistant", "content": text}
                        for i, text in enumerate(chat_texts)]
            return [messages, *panel_texts, count + 1]
        step.click(show_next, [shown], [chat, *panels, shown])
    _, url, _ = launch(demo, http_guard.GuardPolicy(), prevent_thread_lock=True, quiet=True)
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.goto(url)
    expect(page.locator("#next")).to_be_visible(timeout=30_000)
    yield page, batches
    page.close()
    demo.close()


def render_in_browser(page, batches, texts: list[str]) -> list[dict]:
    """Show ``texts`` (already safe_markdown'ed) in the chat pane and the Markdown panels, batch by batch; return
    what DOM_CHECK found, each with the index of its text in ``texts``."""
    found = []
    for start in range(0, len(texts), PER_BATCH + MARKDOWNS):
        chunk = texts[start:start + PER_BATCH + MARKDOWNS]
        chat_texts, panel_texts = chunk[:PER_BATCH], chunk[PER_BATCH:]
        batches.put((chat_texts, panel_texts + [""] * (MARKDOWNS - len(panel_texts))))
        before = int(float(page.locator("#shown input").input_value()))
        page.locator("#next").click()
        expect(page.locator("#shown input")).to_have_value(str(before + 1), timeout=30_000)
        expect(page.locator("#harness-chat span.md")).to_have_count(len(chat_texts), timeout=30_000)
        page.wait_for_timeout(50)  # let code highlighting and math settle
        for problem in page.evaluate(DOM_CHECK, "#harness-chat"):
            found.append({**problem, "text": chat_texts[problem["index"]]})
        for i, text in enumerate(panel_texts):
            for problem in page.evaluate(DOM_CHECK, f"#harness-md-{i}"):
                found.append({**problem, "text": text})
    return found


def test_the_checker_sees_what_it_must_refuse(markdown_page):
    """The DOM check can fail: raw HTML that Gradio's sanitizer lets through (an SVG link, a form, styled text), an
    image and a javascript: link are each reported when shown without safe_markdown."""
    page, batches = markdown_page
    raw = ['<svg><a href="javascript:alert(1)"><text>x</text></a></svg>', "<form><input name=a></form>",
           '<b style="position:fixed">x</b>', "![i](/p.png)"]
    found = render_in_browser(page, batches, raw)
    assert {f["text"] for f in found} == set(raw), found


def test_the_reviewed_table_xss_renders_as_text_in_the_page(markdown_page):
    """The review's input, in a chat message and in a Markdown panel: text, not an SVG link."""
    page, batches = markdown_page
    text = ('| h | i |\n|---|---|\n| `x\\|<svg><a href="javascript:alert(document.domain)"><text x="5" y="20">'
            'click me</text></a></svg>` | y |')
    out = safe_markdown(text)
    assert render_in_browser(page, batches, [out] * (PER_BATCH + 1)) == []
    assert "javascript:alert(document.domain)" in page.locator("#harness-chat span.md").first.inner_text()


def test_grammar_of_hostile_markdown_is_harmless_in_the_browsers_own_renderer(markdown_page):
    """BROWSER_EXAMPLES texts from the grammar, through safe_markdown, read back by Gradio's Chatbot and Markdown
    components in Chromium (marked, Gradio's sanitizer, KaTeX, code highlighting): nothing DOM_CHECK refuses."""
    page, batches = markdown_page
    inputs: list[str] = []

    @settings(max_examples=BROWSER_EXAMPLES, deadline=None, derandomize="ARENA_FUZZ_SEED" not in os.environ,
              suppress_health_check=list(HealthCheck), database=None)
    @given(documents())
    def collect(text):
        inputs.append(text)
    collect()
    outputs = [out for out in map(safe_markdown, inputs) if out.strip()]  # an empty message renders nothing
    found = render_in_browser(page, batches, outputs)
    examples = [(next(i for i in inputs if safe_markdown(i) == f["text"]), f["what"], f["html"]) for f in found[:5]]
    assert not found, f"{len(found)} problems; first ones (input, what, rendered): {examples}"


def test_an_injected_inline_handler_script_or_javascript_link_does_not_run(browser, stub_app):
    """The page's Content-Security-Policy admits only the app's own scripts and Gradio's inline ones (each with the
    response's nonce): markup that did get into the page, as the review's table XSS did, runs nothing. The page
    itself works under it: a round, a vote, an export link, the Leaderboard with its charts and the Batch tab raise
    no violation (a gr.HTML panel did: Gradio renders those through new Function)."""
    from ..web.test_browser import ask

    page = browser.new_page()
    page.add_init_script("window.__violations = [];"
                         "document.addEventListener('securitypolicyviolation', e => window.__violations.push("
                         "[e.violatedDirective, e.blockedURI, e.sample]))")
    page.goto(stub_app.url)
    expect(page.locator("#send")).to_be_visible(timeout=30_000)
    expect(page.locator("#model-status")).to_contain_text("Stub A", timeout=30_000)
    ask(page, "a question under the policy")
    page.locator("#vote-tie").click()
    expect(page.locator("#reveal")).to_contain_text("You voted: Tie")
    page.get_by_role("tab", name="Export / import").click()
    page.locator("#export-csv").click()
    expect(page.locator("#export-file a").first).to_be_visible(timeout=15_000)
    page.get_by_role("tab", name="Leaderboard").click()
    page.locator("#refresh-leaderboard").click()
    expect(page.locator("#named-table")).to_contain_text("Stub", timeout=30_000)
    page.get_by_role("tab", name="Batch").click()
    expect(page.locator("#batch-status")).to_be_visible()
    page.get_by_role("tab", name="Arena").click()
    assert page.evaluate("window.__violations") == []  # Gradio's own page runs under the policy
    page.evaluate("""() => {
        document.body.insertAdjacentHTML('beforeend',
            '<img id="x-img" src="/nothing.png" onerror="window.__ran = 1">' +
            '<svg><a id="x-svg" href="javascript:window.__ran = 2"><text y="20">click me</text></a></svg>' +
            '<a id="x-link" href="javascript:window.__ran = 3">click</a>');
        const s = document.createElement('script'); s.textContent = 'window.__ran = 4'; document.body.appendChild(s);
    }""")
    page.locator("#x-link").click()
    page.locator("#x-svg").click()
    time.sleep(0.5)
    assert page.evaluate("window.__ran") is None
    directives = {v[0] for v in page.evaluate("window.__violations")}
    assert directives & {"script-src-attr", "script-src-elem", "script-src"}, directives
    page.close()


class HostileModelServer:
    """An OpenAI-style server whose model ids and headers are written to phish and track: /a/v1/models lists
    hostile ids, /b/v1/models answers HTML with a hostile Content-Type. Every other GET is a fetch by a browser."""

    def __init__(self):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        server = self
        self.fetches: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                import json
                if self.path == "/a/v1/models":
                    body, kind = json.dumps({"object": "list", "data": [{"id": i} for i in server.ids]}), \
                        "application/json"
                elif self.path == "/b/v1/models":
                    body, kind = "<html>not an API</html>", f"text/html![t]({server.origin}/ct.png)<svg onload=x>; x"
                else:
                    server.fetches.append(self.path)
                    body, kind = "", "image/png"
                raw = body.encode()
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.ids = [f"![x]({self.origin}/id.png)", "[Re-enter the admin token](http://phish.example/)",
                    f"<img src={self.origin}/tag.png>", "a|b **c**"]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def catalog(self) -> str:
        return "".join(f"""
  - id: hostile-{k}
    name: "Hostile {k.upper()}"
    engine: openai
    endpoint: {{base_url: {self.origin}/{k}/v1, model: not-served}}
    quantization: "none"
    license: test
""" for k in "ab")


def test_a_remote_servers_model_ids_and_headers_reach_the_status_panel_as_text(browser, stub, tmp_path_factory):
    """Model ids from a server's /v1/models and its Content-Type are shown in every visitor's status panel: as
    the text they are, no image loaded, no link made (before, only HTML was escaped, so a Markdown image and a
    "Re-enter the admin token" link were rendered, refreshed each second)."""
    from ..conftest import start_app

    hostile = HostileModelServer()
    app = start_app(tmp_path_factory, "hostile", catalog=stub.catalog() + hostile.catalog()).ready()
    page = browser.new_page()
    try:
        page.goto(app.url)
        status = page.locator("#model-status")
        expect(status).to_contain_text("Re-enter the admin token](http://phish.example/)", timeout=60_000)
        expect(status).to_contain_text("did not answer an OpenAI model list", timeout=60_000)
        time.sleep(2)  # two refreshes of the panel
        text = status.inner_text()
        for shown in (*hostile.ids[:3], f"text/html![t]({hostile.origin}/ct.png)<svg onload=x>"):
            assert shown in text, (shown, text)
        assert status.locator("img, a, svg:not(button svg), strong").count() == 0, status.inner_html()
        assert hostile.fetches == []
    finally:
        page.close()
        app.stop()
        hostile.httpd.shutdown()
