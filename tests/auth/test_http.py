"""JSON errors for everything (404, 405, 400, 413, 415, 500), health, readiness, metrics."""

from __future__ import annotations

import logging

import pytest
from flask import Flask

from services.auth import create_app
from tests.auth.conftest import Api, dispose, error_code, fast_settings


def test_unknown_path_is_json_404(api: Api) -> None:
    for path in ("/nope", "/api/auth/nope", "/api/rooms/a/b/c/d"):
        r = api.get(path)
        assert r.status_code == 404
        assert r.mimetype == "application/json"
        assert error_code(r) == "not_found"


def test_wrong_method_is_json_405(api: Api) -> None:
    r = api.get("/api/auth/login")
    assert r.status_code == 405
    assert error_code(r) == "method_not_allowed"
    assert "POST" in r.headers["Allow"]
    r = api.client.put("/api/rooms")
    assert r.status_code == 405


@pytest.mark.parametrize(
    "path", ["/api/auth/register", "/api/auth/login", "/api/auth/refresh", "/api/rooms"]
)
def test_bad_json_is_400(api: Api, path: str) -> None:
    alice = api.user("alice") if path == "/api/rooms" else None
    headers = {"Content-Type": "application/json"}
    if alice:
        headers["Authorization"] = f"Bearer {alice['access_token']}"
    for raw in (b"{", b"{'a': 1}", b"\xff\xfe", b"nul", b'{"a":1}garbage'):
        r = api.client.post(path, data=raw, headers=headers)
        assert r.status_code == 400, raw
        assert error_code(r) == "invalid_json"


@pytest.mark.parametrize("path", ["/api/auth/register", "/api/auth/login", "/api/auth/refresh"])
def test_not_json_is_415(api: Api, path: str) -> None:
    r = api.client.post(path, data={"username": "alice", "password": "x" * 10})
    assert r.status_code == 415
    assert error_code(r) == "unsupported_media_type"
    r = api.client.post(path, data="username=alice", content_type="text/plain")
    assert r.status_code == 415


@pytest.mark.parametrize("body", [b"[]", b"1", b'"x"', b"null", b""])
def test_non_object_bodies_are_422(api: Api, body: bytes) -> None:
    r = api.client.post("/api/auth/login", data=body, content_type="application/json")
    assert r.status_code == 422
    assert error_code(r) == "invalid_request"


def test_huge_body_is_413(api: Api) -> None:
    r = api.client.post(
        "/api/auth/register",
        data=b'{"username":"' + b"a" * 70_000 + b'"}',
        content_type="application/json",
    )
    assert r.status_code == 413
    assert error_code(r) == "payload_too_large"


def test_json_with_charset_is_fine(api: Api) -> None:
    r = api.client.post(
        "/api/auth/register",
        data=b'{"username":"alice","password":"correct horse battery"}',
        content_type="application/json; charset=utf-8",
    )
    assert r.status_code == 201


def test_a_bug_is_a_json_500_without_a_trace(app: Flask, caplog: pytest.LogCaptureFixture) -> None:
    @app.get("/boom")
    def boom() -> str:
        raise RuntimeError("secret internals")

    with caplog.at_level(logging.ERROR, logger="chat.auth"):
        r = app.test_client().get("/boom")
    assert r.status_code == 500
    assert r.get_json() == {
        "error": {"code": "internal_error", "message": "something went wrong on our side"}
    }
    assert b"secret internals" not in r.data and b"Traceback" not in r.data
    assert any("unhandled error" in rec.getMessage() for rec in caplog.records)


def test_healthz_and_readyz(api: Api) -> None:
    r = api.get("/healthz")
    assert (r.status_code, r.get_json()) == (200, {"status": "ok"})
    r = api.get("/readyz")
    assert r.status_code == 200
    assert r.get_json()["status"] == "ok"
    assert r.get_json()["database"] == "ok"
    assert r.get_json()["broker"] == "ok"


def test_readyz_is_503_without_a_database() -> None:
    app = create_app(fast_settings("sqlite:////nonexistent-dir/sub/chat.db"))
    try:
        client = app.test_client()
        r = client.get("/readyz")
        assert r.status_code == 503
        assert r.get_json()["database"] == "unavailable"
        assert client.get("/healthz").status_code == 200
        # and a normal request answers 503 JSON, not a 500 page
        r = client.post("/api/auth/login", json={"username": "alice", "password": "x" * 10})
        assert r.status_code == 503
        assert error_code(r) == "unavailable"
    finally:
        dispose(app)


def test_metrics(api: Api) -> None:
    api.get("/healthz")
    api.login("nobody", "wrong password")
    r = api.get("/metrics")
    assert r.status_code == 200
    assert r.mimetype == "text/plain"
    text = r.data.decode()
    assert "chat_auth_requests_total" in text
    assert 'chat_auth_logins_total{outcome="failed"}' in text
    assert "chat_auth_request_seconds_bucket" in text


def test_request_log_is_structured_and_has_no_secrets(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="chat.auth.access"):
        alice = api.user("alice")
        api.get("/api/auth/me", alice["access_token"])
    records = [rec for rec in caplog.records if rec.name == "chat.auth.access"]
    assert len(records) == 3
    me = records[-1]
    assert me.__dict__["status"] == 200
    assert me.__dict__["path"] == "/api/auth/me"
    assert me.__dict__["user_id"] == alice["id"]
    for rec in records:
        flat = str(rec.__dict__)
        assert alice["access_token"] not in flat
        assert alice["refresh_token"] not in flat
        assert "correct horse battery" not in flat


def test_openapi_document_is_served(api: Api) -> None:
    r = api.get("/api/auth/openapi.yaml")
    assert r.status_code == 200
    assert r.mimetype == "application/yaml"
    assert r.data.startswith(b"openapi: 3.1")
