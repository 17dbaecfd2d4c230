import pytest

from tests.service.conftest import frame_and_tone, serve_app

pytestmark = pytest.mark.anyio


async def test_healthz(live):
    response = await live.client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


async def test_readyz_names_the_providers_that_actually_run(live):
    body = (await live.client.get("/readyz")).json()
    assert body["ready"] is True and body["warmed_up"] is True
    assert body["providers"] == live.app.state.service.runtime.session.get_providers()
    assert body["providers"][-1] == "CPUExecutionProvider"
    assert body["model"] == "toy-brightness-loudness@000000000000"


async def test_readyz_is_503_before_the_model_is_loaded(toy_onnx_model):
    import httpx

    from service.config import Settings
    from service.main import create_app

    app = create_app(Settings(model=toy_onnx_model))  # lifespan not run: nothing loaded
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        response = await client.get("/readyz")
        assert response.status_code == 503 and response.json()["ready"] is False
        files = {"image": ("a.png", b"x"), "audio": ("b.wav", b"y")}
        response = await client.post("/localize", files=files)
        assert response.status_code == 503 and response.json()["error"]["code"] == "not_ready"


def _sample(text: str, name: str, **labels) -> float:
    """The value of one Prometheus sample, 0 when absent."""
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{{want}}}" if labels else f"{name} "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_metrics_count_requests_batches_and_decode_time(live):
    before = (await live.client.get("/metrics")).text
    files = frame_and_tone(32, 32, (0, 0, 8, 8), seconds=1.0)
    assert (await live.client.post("/localize", files=files)).status_code == 200
    assert (await live.client.post("/localize", files={"nope": ("x", b"1")})).status_code == 422
    after = (await live.client.get("/metrics")).text

    def delta(name, **labels):
        return _sample(after, name, **labels) - _sample(before, name, **labels)

    assert delta("fnac_requests_total", method="POST", route="/localize", status="200") == 1
    assert delta("fnac_requests_total", method="POST", route="/localize", status="422") == 1
    assert delta("fnac_request_duration_seconds_count", route="/localize") == 2
    assert delta("fnac_batch_size_count") >= 1
    assert delta("fnac_decode_seconds_count") == 1
    assert delta("fnac_inference_seconds_count") >= 1
    assert "fnac_queue_depth" in after


async def test_request_id_is_kept_or_made(live):
    response = await live.client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    generated = (await live.client.get("/healthz", headers={"X-Request-ID": "bad id\n"})).headers[
        "x-request-id"
    ]
    assert generated != "bad id\n" and len(generated) == 32


async def test_unknown_route_is_a_json_404(live):
    response = await live.client.get("/nope")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


async def test_cors(toy_onnx_model):
    async with serve_app(toy_onnx_model, cors_origins="https://demo.example") as app:
        response = await app.client.options(
            "/localize",
            headers={"Origin": "https://demo.example", "Access-Control-Request-Method": "POST"},
        )
        assert response.headers["access-control-allow-origin"] == "https://demo.example"
        other = await app.client.get("/healthz", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


async def test_openapi_documents_the_multipart_fields(live):
    schema = (await live.client.get("/openapi.json")).json()
    body = schema["paths"]["/localize"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert {"video", "image", "audio", "format", "stride", "t"} <= set(body["properties"])


async def test_docs_and_the_openapi_document_are_counted_under_their_routes(live):
    before = (await live.client.get("/metrics")).text
    assert (await live.client.get("/docs")).status_code == 200
    assert (await live.client.get("/openapi.json")).status_code == 200
    assert (await live.client.get("/static-offline-docs/swagger-ui.css")).status_code == 200
    after = (await live.client.get("/metrics")).text

    def delta(**labels):
        return _sample(after, "fnac_requests_total", **labels) - _sample(
            before, "fnac_requests_total", **labels
        )

    assert delta(method="GET", route="/docs", status="200") == 1
    assert delta(method="GET", route="/openapi.json", status="200") == 1
    assert delta(method="GET", route="/static-offline-docs", status="200") == 1
    assert delta(method="GET", route="unmatched", status="200") == 0


async def test_the_docs_page_needs_no_internet(live):
    import re

    page = (await live.client.get("/docs")).text
    urls = re.findall(r"""(?:src|href|url)\s*[=:]\s*['"]([^'"]+)['"]""", page)
    assert urls and all(url.startswith("/") for url in urls), urls  # nothing from a CDN
    for url in urls:
        response = await live.client.get(url)
        assert response.status_code == 200 and len(response.content) > 100, url


async def test_providers_auto_starts_the_service(toy_onnx_model, monkeypatch):
    from service.config import Settings

    monkeypatch.setenv("FNAC_PROVIDERS", "auto")
    assert Settings().providers == ["auto"]
    async with serve_app(toy_onnx_model, providers=Settings().providers) as app:
        body = (await app.client.get("/readyz")).json()
        assert body["ready"] is True and body["providers"][-1] == "CPUExecutionProvider"


async def test_openapi_types_the_form_fields(live):
    schema = (await live.client.get("/openapi.json")).json()
    body = schema["paths"]["/localize"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    fields = body["properties"]
    assert fields["t"]["type"] == "number" and fields["t"]["minimum"] == 0
    assert fields["stride"]["type"] == "number" and fields["stride"]["exclusiveMinimum"] == 0
    assert fields["box_threshold"]["type"] == "number" and fields["box_threshold"]["maximum"] == 1
    assert fields["heatmap_png"]["type"] == "boolean"
    assert {"json", "png"} <= set(fields["format"]["enum"]) and fields["png"]["enum"] == [
        "overlay",
        "heatmap",
    ]
    assert fields["video"] == {
        "type": "string",
        "format": "binary",
        "description": fields["video"]["description"],
    }
