"""Unit: who may do what (the admin rule, proxies), download tickets (one client, one download, a few
minutes, nothing left on disk), and URLs shown without credentials. test_api.py runs the same through
the real app, off loopback."""
import time
from types import SimpleNamespace

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from arena.core.redact import redact_url, without_credentials
from arena.storage.store import StoreUnavailable, database_url
from arena.web.access import AdminAccess, address_of, session_of
from arena.web.downloads import Downloads


def request(peer="127.0.0.1", headers=None, session_hash="abc"):
    return SimpleNamespace(client=SimpleNamespace(host=peer), headers=headers or {}, session_hash=session_hash)


def test_without_a_token_admin_actions_are_open_on_loopback_but_not_through_a_proxy():
    open_ = AdminAccess()
    assert open_.refusal(request(), None) is None
    for header in ("x-forwarded-for", "forwarded", "x-real-ip"):
        assert open_.refusal(request(headers={header: "203.0.113.9"}), None) == "admin_behind_proxy"
    behind = AdminAccess(trusted_proxies=frozenset({"10.0.0.2"}))
    assert behind.refusal(request(peer="10.0.0.2"), None) == "admin_behind_proxy"


def test_with_a_token_only_the_token_opens_them():
    access = AdminAccess("s3cret")
    assert access.refusal(request(), "s3cret") is None
    assert access.refusal(request(headers={"x-forwarded-for": "203.0.113.9"}), "s3cret") is None
    for typed in (None, "", "s3cre", "s3cret ", "S3CRET"):
        assert access.refusal(request(), typed) == "admin_needed"


def test_the_client_address_believes_forwarding_only_from_a_named_proxy():
    proxies = frozenset({"10.0.0.2"})
    forged = request(peer="198.51.100.7", headers={"x-forwarded-for": "1.2.3.4"})
    assert address_of(forged, proxies) == "198.51.100.7"
    via_proxy = request(peer="10.0.0.2", headers={"x-forwarded-for": "1.2.3.4, 203.0.113.9, 10.0.0.2"})
    assert address_of(via_proxy, proxies) == "203.0.113.9"


def test_session_ids_a_client_chose_are_kept_short_and_plain():
    assert session_of(request(session_hash="a1B2_c-3")) == "a1B2_c-3"
    for odd in ("x" * 300, "bell\x07", "名字", "../../etc"):
        shown = session_of(request(session_hash=odd))
        assert shown.startswith("h-") and len(shown) == 34 and shown == session_of(request(session_hash=odd))
    assert session_of(None) == "anonymous"


@pytest.fixture
def downloads():
    made = Downloads(ttl_s=60)
    yield made
    made.close()


def served(downloads: Downloads, peer: str = "testclient"):
    """The download route in a Starlette app; TestClient requests come from ``peer``."""
    app = Starlette(routes=[downloads.route(lambda r: address_of(r))])
    return TestClient(app, client=(peer, 50000))


def test_an_export_is_served_once_to_the_client_that_asked_then_deleted(downloads):
    path = downloads.new_file(".csv")
    path.write_text("round_id,vote\nr1,Tie\n")
    assert oct(downloads.directory.stat().st_mode & 0o777) == "0o700" and len(path.stem) == 32
    offer = downloads.offer(path, "arena-votes-x.csv", "testclient")
    assert served(downloads, "198.51.100.7").get("/" + offer.url).status_code == 404  # another client
    response = served(downloads).get("/" + offer.url)
    assert response.status_code == 200 and response.text == "round_id,vote\nr1,Tie\n"
    assert 'filename="arena-votes-x.csv"' in response.headers["content-disposition"]
    assert response.headers["cache-control"] == "no-store"
    assert not path.exists()
    assert served(downloads).get("/" + offer.url).status_code == 404  # once
    assert served(downloads).get("/arena/download/" + "A" * 43).status_code == 404  # a guess


def test_an_unfetched_export_is_deleted_when_its_ticket_expires(downloads):
    downloads.ttl_s = 0.05
    path = downloads.new_file(".jsonl")
    path.write_text("{}\n")
    offer = downloads.offer(path, "arena-battles-x.jsonl", "testclient")
    time.sleep(0.1)
    assert served(downloads).get("/" + offer.url).status_code == 404 and not path.exists()


def test_a_report_keeps_its_file_and_one_ticket_per_client(downloads, tmp_path):
    """Batch reports stay in the data directory; the Batch tab asks every second and gets the same link."""
    report = tmp_path / "batch-r1.html"
    report.write_text("<html>report</html>")
    first = downloads.offer(report, report.name, "testclient", owned=False)
    assert downloads.offer(report, report.name, "testclient", owned=False).url == first.url
    assert downloads.offer(report, report.name, "198.51.100.7", owned=False).url != first.url
    for _ in range(2):  # not used up: the person may download it again
        assert served(downloads).get("/" + first.url).text == "<html>report</html>"
    assert report.exists()


def test_urls_are_shown_without_credentials():
    assert without_credentials("http://alice:pw@gpu-box:8000/v1") == "http://gpu-box:8000/v1"
    assert without_credentials("https://tok@h/v1?x=1") == "https://h/v1?x=1"
    assert without_credentials("http://plain:8000/v1") == "http://plain:8000/v1"
    assert redact_url("postgresql://arena:hunter2@db/arena") == "postgresql://arena:***@db/arena"
    assert redact_url("postgresql://hunter2@db/arena") == "postgresql://***@db/arena"
    assert redact_url("no url here") == "no url here"


def test_a_malformed_database_url_is_refused_without_echoing_its_password():
    with pytest.raises(StoreUnavailable) as refused:
        database_url("postgresql://arena:hunter2@db:notaport/arena")
    assert "hunter2" not in str(refused.value) and "arena:***@db" in str(refused.value)
    with pytest.raises(StoreUnavailable) as refused:
        database_url("mysql://root:hunter2@db/arena")
    assert "hunter2" not in str(refused.value)
