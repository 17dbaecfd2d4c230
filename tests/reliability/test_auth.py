"""With FNAC_API_KEYS set on a real server: every model route answers 401 without a valid key (before it looks
at the body), accepts each configured key in both header styles, and the health endpoints stay open."""

from __future__ import annotations

import httpx

from benchmarks import malformed

KEYS = ("first-key-0123456789", "second-key-abcdefghij")
OPEN = {"/healthz", "/readyz", "/metrics", "/"}


def test_keys_guard_every_model_route_and_leave_health_open(start_server):
    with (
        start_server(FNAC_API_KEYS=",".join(KEYS), FNAC_DECODE_WORKERS="1") as server,
        httpx.Client(base_url=server.base, timeout=30) as client,
    ):
        schema = client.get("/openapi.json").json()
        routes = [
            (path, method) for path, ops in schema["paths"].items() if path not in OPEN for method in ops
        ]
        assert {"/localize", "/v1/model"} <= {path for path, _ in routes}

        clip = malformed.encode_clip(1.0)
        body, content_type = malformed.multipart([("video", "clip.mp4", clip, "video/mp4")])
        garbage, _ = malformed.multipart([("nonsense", "x.bin", b"\x00" * 100, None)])
        refused = [
            {},
            {"X-API-Key": "wrong"},
            {"X-API-Key": KEYS[0].upper()},
            {"X-API-Key": KEYS[0][:-1]},
            {"X-API-Key": ""},
            {"Authorization": "Bearer wrong"},
            {"Authorization": f"Basic {KEYS[0]}"},
            {"Authorization": KEYS[0]},
        ]
        for path, method in routes:
            for headers in refused:
                for content in (body, garbage):  # a bad body is not looked at before the key
                    response = client.request(
                        method, path, headers={**headers, "Content-Type": content_type}, content=content
                    )
                    assert response.status_code == 401, (path, headers, response.text)
                    assert response.json()["error"]["code"] == "unauthorized"
                    assert response.headers["www-authenticate"] == "Bearer"
            for key in KEYS:
                for headers in ({"X-API-Key": key}, {"Authorization": f"Bearer {key}"}):
                    response = client.request(
                        method, path, headers={**headers, "Content-Type": content_type}, content=body
                    )
                    assert response.status_code == 200, (path, headers, response.text[:300])

        for path in ("/healthz", "/readyz", "/metrics", "/"):
            assert client.get(path).status_code == 200, path
