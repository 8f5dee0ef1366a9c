"""The Batch tab's review: one graded answer at a time, with the grade that counted and what decided it; a person
marks it correct, partly correct or wrong, and the label is stored (arena/batch/review.py).

Every action is an admin action like starting a run (the answers are the run's, the labels steer the graders),
so it needs the token when the app has one. Handlers are plain functions of plain values.
"""
from __future__ import annotations

import gradio as gr

from arena.batch.review import ReviewError, ReviewItem, Tally, next_item, tally
from arena.batch.service import BatchService
from arena.core.texts import t
from arena.grading.grader import ASSERTIONS, REFERENCE_CHECK
from arena.web.components import text_panel
from arena.web.handlers import Handlers, page_error
from arena.web.i18n import I18N
from arena.web.render import plain
from arena.web.safe_markdown import safe_markdown

LABEL_BUTTONS = {"review_correct": "correct", "review_partly": "partly correct", "review_wrong": "wrong"}


def basis_text(item: ReviewItem, lang: str) -> str:
    """What decided the grade, in the page's language; values from outside are escaped."""
    if item.grader is None or item.grade is None:
        return t("basis_none", lang)
    if item.grader == REFERENCE_CHECK and item.check:
        return t("basis_check", lang, found=plain(item.check.get("found") or "—"),
                 expected=plain(item.check.get("expected") or "—"))
    if item.grader == ASSERTIONS:
        return t("basis_assertions", lang)
    return t("basis_model", lang, grader=plain(item.grader), p=f"{item.grade:.2f}", threshold=item.threshold)


def item_markdown(item: ReviewItem | None, counts: Tally, lang: str) -> str:
    """The review card: where the review stands, then the answer with its question, reference and grade."""
    head = t("review_tally", lang, labelled=counts.labelled, total=counts.total, agreed=counts.agreed,
             both=counts.graded_and_labelled)
    if item is None:
        return f"{head}\n\n{t('review_done', lang)}"
    verdict = t("review_ungraded" if item.passed is None else "review_passed" if item.passed else "review_failed", lang)
    body = t("review_item", lang, model=plain(item.model), preset=plain(item.preset_id).replace("`", ""),
             language=plain(item.language), question=safe_markdown(item.question),
             reference=safe_markdown(item.reference), answer=safe_markdown(item.answer), verdict=verdict,
             basis=basis_text(item, lang))
    return f"{head}\n\n---\n\n{body}"


def _card(found: list[ReviewItem], after: str | None, lang: str) -> tuple[str, str | None]:
    """The card of the next answer to review after ``after``, and its key."""
    item = next_item(found, after)
    return item_markdown(item, tally(found), lang), item.key if item else None


def show_next(h: Handlers, run_id: str | None, after: str | None, token: str | None, lang: str,
              request) -> tuple[str, str | None]:
    """The next answer of the run still to review (after the one shown), as the card and its key."""
    h.admin(request, token, lang)
    if not run_id:
        return t("review_pick", lang), None
    try:
        return _card(h.batch.review_items(run_id), after, lang)
    except ReviewError as exc:
        raise page_error(str(exc), duration=10) from None


def mark(h: Handlers, run_id: str | None, key: str | None, label: str, token: str | None, lang: str,
         request) -> tuple[str, str | None]:
    """Store the label of the answer shown, then show the next one."""
    h.admin(request, token, lang)
    if not run_id or not key:
        raise page_error(t("review_no_answer", lang), duration=10)
    try:
        card, following = _card(h.batch.review_label(run_id, key, label), key, lang)
    except ReviewError as exc:
        raise page_error(str(exc), duration=10) from None
    return f"{t('review_saved', lang, label=t('label_' + label, lang))}\n\n{card}", following


def review_panel(service: BatchService) -> dict:
    c: dict = {"review_intro": text_panel(I18N("review_intro"))}
    with gr.Row():
        c["review_run"] = gr.Dropdown(service.review_runs(), value=None, label=I18N("review_run"),
                                      elem_id="review-run")
        c["review_next"] = gr.Button(I18N("review_next"), elem_id="review-next")
    c["review_card"] = text_panel("", elem_id="review-card")
    with gr.Row():
        for name in LABEL_BUTTONS:
            c[name] = gr.Button(I18N(name), elem_id=name.replace("_", "-"))
    c["review_key"] = gr.State(None)
    return c


def wire(h: Handlers, c: dict) -> None:
    """Events of the review; ``c`` also holds the page's ``lang``, the Batch tab and its token box."""
    lang, token, run, key = c["lang"], c["batch_token"], c["review_run"], c["review_key"]
    out = [c["review_card"], key]

    def on_next(run_id: str | None, after: str | None, token_: str | None, code: str,
                request: gr.Request) -> tuple[str, str | None]:
        """The next answer of the run to review (needs the admin token when the app has one)."""
        return show_next(h, run_id, after, token_, code, request)

    def on_label(label: str):
        def handler(run_id: str | None, shown: str | None, token_: str | None, code: str,
                    request: gr.Request) -> tuple[str, str | None]:
            """Label the answer shown and move on (needs the admin token when the app has one)."""
            return mark(h, run_id, shown, label, token_, code, request)
        return handler

    def on_run(run_id: str | None, token_: str | None, code: str, request: gr.Request) -> tuple[str, str | None]:
        return show_next(h, run_id, None, token_, code, request)

    c["review_next"].click(on_next, [run, key, token, lang], out, api_name="review_next")
    run.change(on_run, [run, token, lang], out, api_visibility="private")
    for name, label in LABEL_BUTTONS.items():
        c[name].click(on_label(label), [run, key, token, lang], out, api_name=f"review_{label.split()[0]}")
    c["tab_batch"].select(lambda: gr.update(choices=h.batch.review_runs()), None, [run], api_visibility="private")
