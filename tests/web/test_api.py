"""Public API via gradio_client against the real app process (two SmolLM2 workers)."""
import csv
import io
import json

import httpx
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

QUESTION = "Name three colors. Answer briefly."


@pytest.fixture
def api(app):
    return Client(app.url, verbose=False)


def ask(api, *args, **kwargs):
    """Stream /ask; return every partial view (as JSON text) and the final one."""
    job = api.submit(*args, api_name="/ask", **kwargs)
    partials = [json.dumps(view, ensure_ascii=False) for view in job]
    return partials, job.result()


TIMINGS = ("ttft_s", "total_s", "output_tokens", "tokens_per_s")


def download(app_url: str, offer: dict, headers: dict | None = None) -> httpx.Response:
    """Fetch what /export offered (its url is relative to the app)."""
    return httpx.get(app_url + offer["url"], headers=headers or {}, timeout=30)


def test_models_endpoint_reports_state_and_load_time(api):
    models = {m["id"]: m for m in api.predict(api_name="/models")}
    assert models["smol-a"]["state"] == "ready" and models["smol-a"]["load_seconds"] > 0


def test_ask_streams_both_answers_with_timings_then_one_vote_and_export(api, app):
    partials, view = ask(api, QUESTION, "named", "smol-a", "smol-b", max_new_tokens=48)
    assert len(partials) > 2  # streamed, not one final blob
    for key in "ab":
        turn = view[key]["turns"][-1]
        assert turn["text"] and turn["error"] is None
        assert 0 < turn["ttft_s"] <= turn["total_s"] and turn["output_tokens"] > 0
    assert view["a"]["label"] == "Smol A"  # named mode shows names from the start
    voted = api.predict(view["round_id"], "B better", api_name="/vote")
    assert voted["vote"] == "B better" and voted["rated"] is False
    with pytest.raises(AppError, match="already has a vote"):
        api.predict(view["round_id"], "A better", api_name="/vote")
    offer = api.predict("csv", "", api_name="/export")
    response = download(app.url, offer)
    assert response.status_code == 200 and offer["filename"] in response.headers["content-disposition"]
    rows = {r["round_id"]: r for r in csv.DictReader(io.StringIO(response.content.decode("utf-8-sig")))}
    row = rows[view["round_id"]]
    assert row["vote"] == "B better" and row["model_a"] == "smol-a" and row["question"] == QUESTION
    assert row["answer_b"] == view["b"]["turns"][-1]["text"]
    assert 50 < float(row["rss_a_mb"]) < 4000  # the worker's resident memory, as the status panel shows it


def test_multi_turn_sends_each_model_its_own_conversation(stub_app, stub):
    """The follow-up request to each model carries that model's own earlier answer (seen by the server)."""
    api = Client(stub_app.url, verbose=False)
    _, first = ask(api, "My name is Ada.", "named", "stub-a", "stub-b")
    _, second = ask(api, "What is my name?", "named", "stub-a", "stub-b", round_id=first["round_id"])
    assert second["round_id"] == first["round_id"] and len(second["a"]["turns"]) == 2
    sent = {r["model"]: r["messages"] for r in stub.requests[-2:]}
    for model, side in (("stub-a", "a"), ("stub-b", "b")):
        assert sent[model] == [{"role": "user", "content": "My name is Ada."},
                               {"role": "assistant", "content": first[side]["turns"][0]["text"]},
                               {"role": "user", "content": "What is my name?"}]
        assert first[side]["turns"][0]["text"] == f"{model} heard: My name is Ada."


def test_bad_questions_are_refused_with_a_reason(api):
    with pytest.raises(AppError, match="empty"):
        ask(api, "   ", "named", "smol-a", "smol-b")
    with pytest.raises(AppError, match="8,001 characters; the limit is 8,000"):
        ask(api, "x" * 8001, "named", "smol-a", "smol-b")
    with pytest.raises(AppError, match="two different models"):
        ask(api, "hi", "named", "smol-a", "smol-a")


def test_votes_are_checked_on_the_server(api, app):
    with pytest.raises(AppError, match="no such round"):
        api.predict("not-a-round", "Tie", api_name="/vote")
    _, view = ask(api, QUESTION, "named", "smol-a", "smol-b", max_new_tokens=8)
    other = Client(app.url, verbose=False)  # a different session
    with pytest.raises(AppError, match="another session"):
        other.predict(view["round_id"], "Tie", api_name="/vote")


def test_blind_battle_hides_identities_in_everything_sent_until_the_vote(api):
    secrets = ("smol-a", "smol-b", "Smol A", "Smol B", "llamacpp", "Q4_1")
    partials, view = ask(api, QUESTION, "blind", max_new_tokens=32)
    raw = "\n".join(partials) + json.dumps(view, ensure_ascii=False)
    for secret in secrets:
        assert secret not in raw, f"{secret!r} leaked before the vote"
    assert len(partials) > 2
    for partial in [*map(json.loads, partials), view]:  # speed gives a model away too: no figure in any view
        for side in "ab":
            assert all(turn[k] is None for turn in partial[side]["turns"] for k in TIMINGS), partial[side]
    assert view["a"]["label"] == "Model A" and view["revealed"] is False
    voted = api.predict(view["round_id"], "Tie", api_name="/vote")
    assert voted["revealed"] and {voted["a"]["label"], voted["b"]["label"]} == {"Smol A", "Smol B"}
    assert voted["a"]["engine"] == "llamacpp"
    assert voted["a"]["turns"][0]["ttft_s"] > 0 and voted["a"]["turns"][0]["output_tokens"] > 0  # revealed now
    with pytest.raises(AppError, match="already has a vote"):
        api.predict(view["round_id"], "A better", api_name="/vote")


def test_leaderboard_endpoint_returns_the_rated_table(api):
    """Ten blind votes through the API (the ratings' minimum), then /leaderboard: the table with both models,
    the note saying how many battles it rests on, and the choices of the category and language selectors."""
    for _ in range(10):
        _, view = ask(api, QUESTION, "blind", max_new_tokens=8)
        api.predict(view["round_id"], "A better", api_name="/vote")
    table, _, note, *_ = api.predict(api_name="/leaderboard")
    assert {"rank", "model", "rating", "95% CI", "battles", "median tokens/s"} <= set(table["headers"])
    models = {row[table["headers"].index("model")] for row in table["data"]}
    assert {"Smol A", "Smol B"} <= models
    assert "rated battle(s) in this selection" in note and "Only" not in note
    english = api.predict(True, "all", "en", api_name="/leaderboard")
    assert english[2] == note  # every battle so far was asked in English (typed, detected from the text)


def test_stop_ends_a_streaming_round_and_it_can_still_be_voted_on(api):
    job = api.submit("Write a very long story about a dragon who learns to cook.", "named", "smol-a", "smol-b",
                     max_new_tokens=1000, api_name="/ask")
    for view in job:
        if view["a"]["turns"][-1]["text"] and view["streaming"]:
            assert api.predict(view["round_id"], api_name="/stop") is True
            break
    final = job.result()
    assert all(final[k]["turns"][-1]["stopped"] and final[k]["turns"][-1]["error"] is None for k in "ab")
    assert final["a"]["turns"][-1]["output_tokens"] < 1000
    assert api.predict(final["round_id"], "Tie", api_name="/vote")["vote"] == "Tie"


def test_off_loopback_exports_imports_and_batches_need_the_token_and_files_go_only_to_who_asked(
        tmp_path_factory, stub):
    """Listening on every interface with a token: without it a visitor can't export, import, start, stop or
    watch a batch run; with it the export downloads once, for that client only. No export or other file of
    the data directory is readable through Gradio's file route, by the name exports had before or any other."""
    from gradio_client import handle_file

    from ..conftest import start_app

    running = start_app(tmp_path_factory, "admin", catalog=stub.catalog(), args=("--host", "0.0.0.0"),
                        env={"ARENA_ADMIN_TOKEN": "s3cret"}).ready()
    try:
        api = Client(running.url, verbose=False)
        _, view = ask(api, "Export me", "named", "stub-a", "stub-b")
        api.predict(view["round_id"], "Tie", api_name="/vote")
        for token in ("", "wrong"):
            with pytest.raises(AppError, match="need the admin token"):
                api.predict("csv", token, api_name="/export")
            with pytest.raises(AppError, match="need the admin token"):
                api.predict(["stub-a", "stub-b"], ["en-logic-1"], 1, "none", token, api_name="/batch_start")
            with pytest.raises(AppError, match="need the admin token"):
                api.predict(token, api_name="/batch_stop")
            status, report = api.predict(token, api_name="/batch_progress")
            assert status.startswith("🔒") and not report
        battle = tmp_path_factory.mktemp("import") / "one.jsonl"
        battle.write_text(json.dumps({"model_a": "x1", "model_b": "x2", "winner": "tie", "anony": True}) + "\n")
        with pytest.raises(AppError, match="need the admin token"):
            api.predict(handle_file(str(battle)), "", api_name="/import")
        assert "Imported **1** battle(s)" in api.predict(handle_file(str(battle)), "s3cret", api_name="/import")
        offer = api.predict("jsonl", "s3cret", api_name="/export")
        assert offer["filename"].startswith("arena-battles-") and len(offer["url"].rsplit("/", 1)[1]) >= 40
        forged = download(running.url, {"url": offer["url"][:-4] + "AAAA"})
        assert forged.status_code == 404
        first = download(running.url, offer)
        assert first.status_code == 200 and b"Export me" in first.content
        assert download(running.url, offer).status_code == 404  # one download, then the file is gone
        for path in (f"data/exports/{offer['filename']}", str(running.tmp / "data" / "arena.db"),
                     str(running.tmp / "data" / "reports")):
            assert httpx.get(f"{running.url}gradio_api/file={path}", timeout=10).status_code in (403, 404)
        assert api.predict(["stub-a", "stub-b"], ["en-logic-1"], 1, "none", "s3cret",
                           api_name="/batch_start").startswith("`")
    finally:
        running.stop()


def test_a_request_through_a_proxy_needs_a_token_even_on_loopback(app):
    """The app listens on 127.0.0.1 without a token, but a reverse proxy forwards the internet to it: a request
    carrying X-Forwarded-For is refused export, and told how to set a token."""
    proxied = Client(app.url, verbose=False, headers={"X-Forwarded-For": "203.0.113.9"})
    with pytest.raises(AppError, match="came through a proxy.*--trusted-proxy"):
        proxied.predict("csv", "", api_name="/export")


def test_rate_limits_per_session_and_per_address_and_the_turn_cap(tmp_path_factory, stub):
    """Through the API: a round takes at most --max-turns questions; a session's question limit; a
    fresh session does not reset the per-address limit; the vote limit."""
    from ..conftest import start_app

    args = ("--questions-per-minute", "3", "--questions-per-minute-per-address", "4", "--max-turns", "2",
            "--votes-per-minute", "1")
    running = start_app(tmp_path_factory, "limits", catalog=stub.catalog(), args=args).ready()
    try:
        first = Client(running.url, verbose=False)
        _, one = ask(first, "q1", "named", "stub-a", "stub-b")
        ask(first, "q2", "named", "stub-a", "stub-b", round_id=one["round_id"])
        with pytest.raises(AppError, match="This round already has 2 questions"):
            ask(first, "q3", "named", "stub-a", "stub-b", round_id=one["round_id"])
        _, three = ask(first, "q3", "named", "stub-a", "stub-b")
        with pytest.raises(AppError, match=r"Too many questions from this session \(3 per minute\)"):
            ask(first, "q4", "named", "stub-a", "stub-b")
        ask(Client(running.url, verbose=False), "q5", "named", "stub-a", "stub-b")  # a new session: 4th from here
        with pytest.raises(AppError, match=r"Too many questions from this address \(4 per minute\)"):
            ask(Client(running.url, verbose=False), "q6", "named", "stub-a", "stub-b")
        assert first.predict(three["round_id"], "Tie", api_name="/vote")["vote"] == "Tie"
        with pytest.raises(AppError, match=r"Too many votes from this session \(1 per minute\)"):
            first.predict(one["round_id"], "Tie", api_name="/vote")
    finally:
        running.stop()
