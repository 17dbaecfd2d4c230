import pytest

pytestmark = pytest.mark.anyio


async def test_demo_page_posts_to_localize(live):
    response = await live.client.get("/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    page = response.text
    for needle in (
        'id="video"',
        'id="image"',
        'id="audio"',
        'fetch("/localize"',
        '{ format: "mp4" }',
        "stride",
        "X-API-Key",
    ):
        assert needle in page, needle


async def test_head_on_the_demo_page_is_allowed(live):
    response = await live.client.head("/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
