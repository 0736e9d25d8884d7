"""The console in process: off without the admin key, login and its cookie, session expiry and
forgery, CSRF and cross-origin forms, what the pages show, promote / roll back, approve / reject
of held versions, and the experiment's decision log."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import orjson
import pytest
from starlette.testclient import TestClient

from console_fixtures import ADMIN_KEY, SECRET, V2_TEXT, add_inference, add_thumb, client, publish_held
from proxy.console import diff, plot, summary
from proxy.console.session import COOKIE, Sessions
from proxy.errors import ServiceUnavailable
from proxy.ledger import DecisionRecord, ThumbTally
from proxy.registry import SpecState, SpecVersion
from proxy.registry.files import FileRegistry

HTML = {"accept": "text/html"}


def login(c: TestClient, key: str = ADMIN_KEY) -> None:
    r = c.post("/console/login", data={"key": key}, headers=HTML, follow_redirects=False)
    assert r.status_code == 303, r.text


def csrf_of(c: TestClient, path: str = "/console/specs/support/versions/2") -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', c.get(path, headers=HTML).text)
    assert match
    return match.group(1)


def production(tmp_path: Path) -> int | None:
    """What the registry on disk says, not what the page says."""
    return orjson.loads((tmp_path / "specs" / "support" / "labels.json").read_bytes()).get("production")


def test_console_is_off_without_the_admin_key(tmp_path: Path) -> None:
    with client(tmp_path, admin_key=None) as c:
        for path in ("/console/", "/console/login", "/console/specs", "/console/specs/support/versions/1"):
            r = c.get(path, headers=HTML)
            assert r.status_code == 404, path
        r = c.post("/console/login", data={"key": "anything"})
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
        # the public assets stay: other sites load the feedback snippet from here
        assert c.get("/console/static/speclearn-feedback.js").status_code == 200


def test_login_sets_a_strict_http_only_expiring_cookie(tmp_path: Path) -> None:
    with client(tmp_path, console_session_seconds=600) as c:
        r = c.get("/console/specs", headers=HTML, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/console/login?next=")
        r = c.post("/console/login", data={"key": "wrong"}, headers=HTML)
        assert r.status_code == 401 and "not the admin key" in r.text and COOKIE not in r.cookies
        r = c.post(
            "/console/login",
            data={"key": ADMIN_KEY, "next": "/console/specs/support"},
            headers=HTML,
            follow_redirects=False,
        )
        assert r.status_code == 303 and r.headers["location"] == "/console/specs/support"
        cookie = r.headers["set-cookie"]
        for attribute in ("HttpOnly", "SameSite=strict", "Max-Age=600", "Path=/console"):
            assert attribute.lower() in cookie.lower(), cookie
        assert "secure" not in cookie.lower()  # plain http: a Secure cookie would never come back
        assert c.get("/console/specs", headers=HTML).status_code == 200


def test_the_cookie_is_secure_over_https(tmp_path: Path) -> None:
    with client(tmp_path, base_url="https://testserver") as c:
        r = c.post("/console/login", data={"key": ADMIN_KEY}, follow_redirects=False)
        assert "secure" in r.headers["set-cookie"].lower()


def test_login_never_redirects_off_the_console(tmp_path: Path) -> None:
    with client(tmp_path) as c:
        for target in ("https://evil.example/", "//evil.example/x", "/admin/specs"):
            r = c.post("/console/login", data={"key": ADMIN_KEY, "next": target}, follow_redirects=False)
            assert r.headers["location"] == "/console/specs", target


def test_sessions_expire_and_reject_forgeries() -> None:
    now = [1000.0]
    sessions = Sessions(ADMIN_KEY, SECRET, lifetime=60, clock=lambda: now[0])
    cookie, session = sessions.issue()
    assert sessions.read(cookie) == session
    now[0] = 1059.0
    assert sessions.read(cookie) == session
    now[0] = 1060.0
    assert sessions.read(cookie) is None  # expired
    now[0] = 1000.0
    data, signature = cookie.split(".")
    assert sessions.read(data + "." + signature[::-1]) is None  # forged signature
    assert sessions.read(data[:-2] + "." + signature) is None  # altered payload
    assert sessions.read("garbage") is None and sessions.read(None) is None
    # another admin key or secret: the same cookie means nothing
    assert Sessions("other-key", SECRET, 60, clock=lambda: now[0]).read(cookie) is None
    assert Sessions(ADMIN_KEY, "other-secret", 60, clock=lambda: now[0]).read(cookie) is None


def test_an_expired_session_is_refused_by_the_app(tmp_path: Path) -> None:
    past = Sessions(ADMIN_KEY, SECRET, lifetime=60, clock=lambda: 1_000_000.0)  # expired long ago
    expired, session = past.issue()
    with client(tmp_path) as c:
        c.cookies.set(COOKIE, expired, path="/console")
        r = c.get("/console/specs", headers=HTML, follow_redirects=False)
        assert r.status_code == 303 and "/console/login" in r.headers["location"]
        r = c.post("/console/specs/support/promote", data={"csrf": session.csrf, "version": "2"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "session_required"
    assert production(tmp_path) == 1


def test_forms_need_the_sessions_csrf_token(tmp_path: Path) -> None:
    with client(tmp_path) as c:
        other_csrf = Sessions(ADMIN_KEY, SECRET, 600).issue()[1].csrf  # valid format, other session
        login(c)
        for form in ({"version": "2"}, {"version": "2", "csrf": "forged"}, {"version": "2", "csrf": other_csrf}):
            r = c.post("/console/specs/support/promote", data=form)
            assert r.status_code == 403 and r.json()["error"]["code"] == "csrf_failed", form
            assert (
                "text/html" in c.post("/console/specs/support/promote", data=form, headers=HTML).headers["content-type"]
            )
        assert production(tmp_path) == 1
        r = c.post("/console/logout", data={"csrf": "forged"})
        assert r.status_code == 403
        token = csrf_of(c)
        r = c.post(
            "/console/specs/support/promote",
            data={"version": "2", "csrf": token},
            headers={"origin": "https://evil.example"},
        )
        assert r.status_code == 403 and r.json()["error"]["code"] == "cross_origin"
        assert production(tmp_path) == 1
        r = c.post(
            "/console/specs/support/promote",
            data={"version": "2", "csrf": token},
            headers={"origin": "http://testserver"},
            follow_redirects=False,
        )
        assert r.status_code == 303
        assert production(tmp_path) == 2


def test_promote_and_roll_back_move_the_production_label(tmp_path: Path) -> None:
    with client(tmp_path) as c:
        login(c)
        token = csrf_of(c)
        r = c.post("/console/specs/support/promote", data={"version": "2", "csrf": token}, follow_redirects=False)
        assert r.headers["location"] == "/console/specs/support/versions/2?done=promoted"
        assert production(tmp_path) == 2
        page = c.get(r.headers["location"], headers=HTML).text
        assert "production is now v2" in page and "Roll back production to v1" in page
        r = c.post("/console/specs/support/rollback", data={"csrf": token, "from": "1"})
        assert r.status_code == 409 and r.json()["error"]["code"] == "stale_form"  # the page was made for v1
        r = c.post("/console/specs/support/rollback", data={"csrf": token, "from": "2"}, follow_redirects=False)
        assert r.headers["location"] == "/console/specs/support/versions/1?done=rolled-back"
        assert production(tmp_path) == 1
        r = c.post("/console/specs/support/promote", data={"version": "9", "csrf": token})
        assert r.status_code == 404
        r = c.post("/console/specs/nope/promote", data={"version": "1", "csrf": token})
        assert r.status_code == 404 and r.json()["error"]["type"] == "invalid_request_error"


def test_pages_show_versions_diff_principles_gate_cost_and_tokens(tmp_path: Path) -> None:
    with client(tmp_path) as c:
        login(c)
        listing = c.get("/console/specs", headers=HTML).text
        assert "support" in listing and "production v1" in listing and "candidate v2" in listing
        assert (
            'href="/console/specs/support/versions/1"' in listing
            and 'href="/console/specs/support/versions/2"' in listing
        )
        page = c.get("/console/specs/support/versions/2", headers=HTML)
        assert page.status_code == 200
        html = page.text
        assert page.headers["content-security-policy"].startswith("default-src 'self'")
        assert "<ins>Answer in at most 25 words.</ins>" in html  # the added sentence, on the right
        for text in ("Be friendly.", "max_words:25", "way too long", "just give me the short answer",
                     "fake-model, both orders", "candidate_accuracy", "0.8333", "2804", "Explain every detail."):  # fmt: skip
            assert text in html, text
        assert f"≈ {round(len(V2_TEXT) / 4)}" in html and "estimate" in html
        assert 'id="approval"' not in html and "/approve" not in html  # not held: no approval section
        first = c.get("/console/specs/support/versions/1", headers=HTML).text
        assert "The first version" in first and "No principles recorded" in first
        assert c.get("/console/specs/support/versions/7", headers=HTML).status_code == 404


def test_the_plot_shows_up_rates_with_intervals(tmp_path: Path) -> None:
    with client(tmp_path) as c:
        login(c)
        assert "No thumbs" in c.get("/console/specs/support", headers=HTML).text
        add_inference(c, "inf-1", version=1)
        add_inference(c, "inf-2", version=2)
        for i, (inference, up) in enumerate([("inf-1", True), ("inf-1", False), ("inf-2", True), ("inf-2", True)]):
            add_thumb(c, f"fb-{i}", inference, up, at=1_764_000_000.0 + 3600 * i)
        html = c.get("/console/specs/support", headers=HTML).text
        # four per-version points and, in the same four hours, the served rate of all versions
        assert "<svg" in html and html.count("<circle cx=") == 8 and "served (all versions)" in html
        assert "v1 " in html and "1/1 up = 1.00" in html and "0/1 up = 0.00" in html
        low, high = plot.wilson(2, 2)
        assert f"{low:.2f}–{high:.2f}, n=2" in html


def test_the_served_curve_sums_every_version_in_a_bucket() -> None:
    day = 86400
    tallies = [ThumbTally(1, 0.0, 3, 4), ThumbTally(2, 0.0, 1, 4), ThumbTally(2, day, 5, 6)]
    built = plot.build(tallies, day)
    assert built is not None and [len(s.points) for s in built.series] == [1, 2]
    first, second = built.served.points
    assert "4/8 up = 0.50" in first.title and "5/6 up = 0.83" in second.title
    assert first.y_low > first.y > first.y_high  # the band: SVG y grows downwards
    assert built.served.band.startswith("M") and built.served.band.endswith("Z")


def test_text_is_escaped(tmp_path: Path) -> None:
    with client(tmp_path) as c:
        FileRegistry(tmp_path / "specs", poll_interval=0).publish_sync("xss", "<script>alert(1)</script> Be nice.")
        c.portal.call(c.app.state.proxy.registry.refresh)  # type: ignore[attr-defined]
        login(c)
        html = c.get("/console/specs/xss/versions/1", headers=HTML).text
        assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_wilson_interval() -> None:
    assert plot.wilson(0, 0) == (0.0, 1.0)
    low, high = plot.wilson(8, 10)
    assert (round(low, 3), round(high, 3)) == (0.490, 0.943)  # the textbook value
    assert plot.wilson(10, 10)[1] == pytest.approx(1.0) and plot.wilson(0, 10)[0] == pytest.approx(0.0)


def test_diff_marks_changed_words_sentence_by_sentence() -> None:
    rows = diff.side_by_side("Be brief. Be kind.", "Be brief. Be very kind. Sign off.")
    assert [r.tag for r in rows] == ["equal", "replace", "insert"]
    assert ("very ", True) in rows[1].right and rows[2].right == [("Sign off.", True)]
    assert diff.changed(rows) == (1, 2)


def test_rollback_target_is_the_parent_else_the_version_below(tmp_path: Path) -> None:
    registry = FileRegistry(tmp_path / "specs", poll_interval=0)
    for i in range(3):
        registry.publish_sync("s", f"text {i}", parent=1 if i == 2 else None)
    asyncio.run(registry.set_label("s", "production", 3))
    assert summary.rollback_target(registry.snapshot.get("s")) == 1  # v3 was made from v1
    asyncio.run(registry.set_label("s", "production", 1))
    assert summary.rollback_target(registry.snapshot.get("s")) is None  # nothing before v1
    # no recorded parent (a version stored elsewhere): the highest version below production
    bare = {v: SpecVersion("b", v, f"t{v}", "00", {}) for v in (1, 2, 5)}
    assert summary.rollback_target(SpecState("b", bare, {"production": 5})) == 2
    assert summary.rollback_target(SpecState("b", bare, {})) is None


def test_a_session_made_by_one_worker_is_valid_on_every_other(fake_upstream, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """`speclearn serve` draws one signing secret for all its workers (none configured here)."""
    import httpx

    from console_fixtures import publish_versions
    from helpers import start_proxy

    publish_versions(tmp_path / "specs")
    proxy = start_proxy(tmp_path, fake_upstream.url, workers=2, env={"SPECLEARN_ADMIN_KEY": ADMIN_KEY})
    try:
        r = httpx.post(proxy.root_url + "/console/login", data={"key": ADMIN_KEY})
        assert r.status_code == 303
        cookie = {COOKIE: r.cookies[COOKIE]}
        # a new connection each time, so the kernel spreads them over both workers; with a
        # secret per worker about half of these would be sent to the login page
        codes = [httpx.get(proxy.root_url + "/console/specs", cookies=cookie, headers={**HTML, "connection": "close"}).status_code
                 for _ in range(24)]  # fmt: skip
        assert codes == [200] * 24
    finally:
        proxy.stop()


def test_tokens_come_from_front_matter_else_an_estimate() -> None:
    text = "x" * 400
    assert summary.spec_tokens(SpecVersion("s", 1, text, "00", {})) == summary.Tokens(100, True)
    assert summary.spec_tokens(SpecVersion("s", 1, text, "00", {"spec_tokens": 87})) == summary.Tokens(87, False)
    assert summary.spec_tokens(SpecVersion("s", 1, text, "00", {"spec_tokens": "many"})).estimated


def test_login_attempts_are_rate_limited(tmp_path: Path) -> None:
    with client(tmp_path) as c:
        codes = [c.post("/console/login", data={"key": "guess"}).status_code for _ in range(11)]
        assert codes == [401] * 10 + [429]
        r = c.post("/console/login", data={"key": ADMIN_KEY})  # even the right key waits its turn
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert r.json()["error"]["code"] == "rate_limit_exceeded"


def _registry_state(c: TestClient) -> tuple[dict[str, int], dict[int, tuple[str, str | None]]]:
    """Labels and holds as a fresh reader of the registry on disk sees them (timestamps aside)."""
    registry = FileRegistry(c.app.state.proxy.settings.specs_dir, poll_interval=0)  # type: ignore[attr-defined]
    asyncio.run(registry.refresh())
    state = registry.snapshot.get("support")
    return state.labels, {v: (h.status, h.label) for v, h in state.holds.items()}


def test_approve_and_reject_change_the_registry_as_the_admin_api_does(tmp_path: Path) -> None:
    after = {}
    for way in ("console", "admin"):
        with client(tmp_path / way) as c:
            assert publish_held(c, "Answer in French.", "candidate") == 3
            assert publish_held(c, "Answer in German.", "production") == 4
            before = _registry_state(c)
            assert before == ({"production": 1, "candidate": 2}, {3: ("held", "candidate"), 4: ("held", "production")})
            if way == "console":
                login(c)
                token = csrf_of(c, "/console/specs/support/versions/3")
                r = c.post("/console/specs/support/versions/3/approve", data={"csrf": token}, follow_redirects=False)
                assert (
                    r.status_code == 303 and r.headers["location"] == "/console/specs/support/versions/3?done=approved"
                )
                assert "Approved: candidate now points at v3." in c.get(r.headers["location"], headers=HTML).text
                r = c.post("/console/specs/support/versions/4/reject", data={"csrf": token}, follow_redirects=False)
                assert r.headers["location"] == "/console/specs/support/versions/4?done=rejected"
                assert "Rejected: v4 will never be served." in c.get(r.headers["location"], headers=HTML).text
                again = c.post("/console/specs/support/versions/3/approve", data={"csrf": token})
                missing = c.post("/console/specs/support/versions/9/approve", data={"csrf": token})
            else:
                admin = {"authorization": f"Bearer {ADMIN_KEY}"}
                assert c.post("/admin/specs/support/versions/3/approve", headers=admin).json()["status"] == "approved"
                assert c.post("/admin/specs/support/versions/4/reject", headers=admin).json()["status"] == "rejected"
                again = c.post("/admin/specs/support/versions/3/approve", headers=admin)
                missing = c.post("/admin/specs/support/versions/9/approve", headers=admin)
            assert again.status_code == 409 and missing.status_code == 404  # decided once; no such version
            after[way] = (_registry_state(c), again.json()["error"]["code"], missing.json()["error"]["code"])
    assert after["console"] == after["admin"]
    (labels, holds), _, _ = after["console"]
    assert labels == {"production": 1, "candidate": 3} and holds == {
        3: ("approved", "candidate"),
        4: ("rejected", "production"),
    }


def test_a_forged_form_approves_nothing(tmp_path: Path) -> None:
    with client(tmp_path) as c:
        publish_held(c, "Answer in French.", "production")
        other_csrf = Sessions(ADMIN_KEY, SECRET, 600).issue()[1].csrf
        login(c)
        for action in ("approve", "reject"):
            for form in ({"version": "3"}, {"csrf": "forged"}, {"csrf": other_csrf}):
                r = c.post(f"/console/specs/support/versions/3/{action}", data=form)
                assert r.status_code == 403 and r.json()["error"]["code"] == "csrf_failed", (action, form)
            token = csrf_of(c, "/console/specs/support/versions/3")
            r = c.post(
                f"/console/specs/support/versions/3/{action}",
                data={"csrf": token},
                headers={"origin": "https://evil.example"},
            )
            assert r.status_code == 403 and r.json()["error"]["code"] == "cross_origin"
        c.cookies.clear()
        r = c.post("/console/specs/support/versions/3/approve", data={"csrf": token})
        assert r.status_code == 401 and r.json()["error"]["code"] == "session_required"
        assert _registry_state(c) == ({"production": 1, "candidate": 2}, {3: ("held", "production")})


def test_a_held_version_shows_its_hold_and_the_buttons_and_others_do_not(tmp_path: Path) -> None:
    with client(tmp_path) as c:
        publish_held(c, "Answer in French.", "candidate")
        login(c)
        held = c.get("/console/specs/support/versions/3", headers=HTML)
        assert held.status_code == 200 and "French" in held.text  # a reviewer can read it (in the diff)
        for text in ('id="approval"', 'action="/console/specs/support/versions/3/approve"',
                     'action="/console/specs/support/versions/3/reject"', "Approve v3 as candidate",
                     'class="label hold-held">held<', 'asks for <span class="label label-candidate">candidate'):  # fmt: skip
            assert text in held.text, text
        assert held.text.count('name="csrf"') == 3  # approve, reject, log out: no promote for a held version
        assert 'id="promote"' not in held.text
        plain = c.get("/console/specs/support/versions/2", headers=HTML).text
        assert (
            'id="approval"' not in plain
            and "/approve" not in plain
            and "/reject" not in plain
            and 'id="promote"' in plain
        )
        for page in ("/console/specs", "/console/specs/support"):
            html = c.get(page, headers=HTML).text
            assert html.count('class="label hold-held">held</span>') == 1, page
        token = csrf_of(c, "/console/specs/support/versions/3")
        c.post("/console/specs/support/versions/3/reject", data={"csrf": token})
        rejected = c.get("/console/specs/support/versions/3", headers=HTML).text
        assert (
            'class="label hold-rejected">rejected<' in rejected
            and "/approve" not in rejected
            and 'id="promote"' not in rejected
        )
        assert "hold-held" not in c.get("/console/specs", headers=HTML).text


def _decision(c: TestClient, i: int, decision: str = "continue", **numbers: float | int | None) -> DecisionRecord:
    values: dict = {"p_value": 0.41, "lift": 0.012, "candidate_ups": 30 + i, "candidate_n": 60 + i,
                    "production_ups": 29, "production_n": 60 + i, **numbers}  # fmt: skip
    rec = DecisionRecord("support", 2, 1, decision, f"look {i}", 1_800_000_000.0 + 600 * i, **values)
    c.portal.call(c.app.state.proxy.ledger.add_decision, rec)  # type: ignore[attr-defined]
    return rec


def test_the_spec_page_shows_the_experiment_and_its_decision_log(tmp_path: Path) -> None:
    with client(tmp_path, canary_fraction=0.25) as c:
        login(c)
        html = c.get("/console/specs/support", headers=HTML).text
        assert "No experiment decisions yet." in html and 'id="decision-log"' not in html
        assert "live</span> candidate" in html and "25% of the users" in html
        for i in range(24):
            _decision(c, i)
        _decision(
            c,
            24,
            "rollback",
            p_value=0.0123,
            lift=-0.081,
            candidate_ups=40,
            candidate_n=120,
            production_ups=62,
            production_n=118,
        )
        c.portal.call(
            c.app.state.proxy.ledger.add_decision, DecisionRecord("other", 5, 4, "promote", "not ours", 1_900_000_000.0)
        )  # type: ignore[attr-defined]
        html = c.get("/console/specs/support", headers=HTML).text
        latest = html[html.index('id="latest-decision"') : html.index("Decision log")]
        for text in ("decision-rollback", "0.0123", "-0.081", "40/120", "62/118", "look 24"):
            assert text in latest, text
        log = html[html.index('id="decision-log"') :]
        log = log[: log.index("</table>")]
        rows = re.findall(r"<tr>(.*?)</tr>", log, re.S)[1:]  # past the header
        assert len(rows) == 20  # the newest 20 of 25, newest first
        assert "look 24" in rows[0] and "look 5" in rows[-1] and "look 4" not in log and "not ours" not in html
        assert "+0.012" in rows[1] and "0.4100" in rows[1] and "35/65" in rows[-1] and "29/65" in rows[-1]
        assert "2027-01-15 12:00 UTC" in rows[0]  # 1_800_014_400 s
        for arm in (1, 2):  # both arms' pages point at the log
            assert (
                'href="/console/specs/support#experiment"'
                in c.get(f"/console/specs/support/versions/{arm}", headers=HTML).text
            )


def test_the_experiment_without_a_canary_share_or_a_readable_ledger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with client(tmp_path) as c:  # no canary share: the candidate gets no traffic
        login(c)
        _decision(c, 0, p_value=None, lift=None)
        html = c.get("/console/specs/support", headers=HTML).text
        assert "paused</span> candidate" in html and "SPECLEARN_CANARY_FRACTION" in html
        row = re.findall(r"<tr>(.*?)</tr>", html[html.index('id="decision-log"') :], re.S)[1]
        assert row.count("–") == 2  # no p-value or lift before the burn-in

        async def unavailable(spec: str, limit: int | None = None) -> list[DecisionRecord]:
            raise ServiceUnavailable("the database is unavailable (reading decisions)")

        monkeypatch.setattr(c.app.state.proxy.ledger, "decisions", unavailable)  # type: ignore[attr-defined]
        r = c.get("/console/specs/support", headers=HTML)
        assert r.status_code == 200 and "No experiment decisions yet (the ledger could not be read)." in r.text
        c.portal.call(c.app.state.proxy.registry.set_label, "support", "candidate", 1)  # type: ignore[attr-defined]
        assert "No live experiment" in c.get("/console/specs/support", headers=HTML).text


def test_a_proposal_shows_the_persons_sentence_the_rule_and_why_it_waits(tmp_path: Path) -> None:
    """A rule that would change the person's text is held with its evidence; the compiled version
    beside it links to it and says who the feedback came from."""
    with client(tmp_path) as c:
        registry = FileRegistry(c.app.state.proxy.settings.specs_dir, poll_interval=0)  # type: ignore[attr-defined]
        rule = {"text": "Answer in at most 20 words.", "support": 9, "relevant": 10, "heldout": 12,
                "accuracy": 0.9, "users": 3, "check": "max_words:20"}  # fmt: skip
        proposal = {"replaces": "Keep answers under 200 words.", "with": rule["text"], "rule": rule}
        held = registry.publish_sync("support", "Answer in at most 20 words.", {"held_for": "proposal", "proposal": proposal},
                                     "compiler", 2, ["candidate"]).version  # fmt: skip
        voices = "Feedback came from 3 distinct voice(s) (3 user(s))."
        compiled = registry.publish_sync("support", "Be kind.", {"voices": voices, "proposals": [{**proposal, "held_as": held}]},
                                         "compiler", 2, ["candidate"]).version  # fmt: skip
        anonymous = registry.publish_sync("support", "Be brief.", {"held_for": "only 1 distinct voice(s) behind this feedback"},
                                          "compiler", 2, ["candidate"]).version  # fmt: skip
        c.portal.call(c.app.state.proxy.registry.refresh)  # type: ignore[attr-defined]
        login(c)
        page = c.get(f"/console/specs/support/versions/{held}", headers=HTML).text
        assert 'id="proposal"' in page and "<del>Keep answers under 200 words.</del>" in page
        assert "<ins>Answer in at most 20 words.</ins>" in page and "accuracy 0.9" in page and "from 3 user(s)" in page
        assert "The compiler never applies this on its own" in page and 'id="approve"' in page
        page = c.get(f"/console/specs/support/versions/{compiled}", headers=HTML).text
        assert voices in page and f'href="/console/specs/support/versions/{held}"' in page
        page = c.get(f"/console/specs/support/versions/{anonymous}", headers=HTML).text
        assert "Held for a person: only 1 distinct voice(s) behind this feedback." in page
