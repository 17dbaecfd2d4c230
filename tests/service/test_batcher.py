import asyncio
import contextlib
import threading

import numpy as np
import pytest

from service.batcher import MicroBatcher, Overloaded

pytestmark = pytest.mark.anyio


class RecordingModel:
    """run_batch stand-in: heatmap = image mean, score = audio mean; records batch sizes; can be paused."""

    def __init__(self):
        self.batch_sizes: list[int] = []
        self.release = threading.Event()
        self.release.set()
        self.entered = threading.Event()

    def __call__(self, images, audio):
        self.entered.set()
        self.release.wait(timeout=10)
        self.batch_sizes.append(len(images))
        heatmaps = np.repeat(images.mean(axis=(1, 2, 3))[:, None, None], 7, axis=1).repeat(7, axis=2)
        return heatmaps.astype(np.float32), audio.mean(axis=1)


def _input(value: float):
    return np.full((4, 4, 3), value, np.uint8), np.full(10, value / 100, np.float32)


async def test_concurrent_requests_share_batches_and_get_their_own_results():
    model = RecordingModel()
    batcher = MicroBatcher(model, max_batch=4, max_wait_ms=50, queue_size=16)
    await batcher.start()
    try:
        results = await asyncio.gather(*(batcher.predict(*_input(v)) for v in range(10)))
    finally:
        await batcher.stop()
    assert [r.score for r in results] == pytest.approx([v / 100 for v in range(10)])
    assert [float(r.heatmap[0, 0]) for r in results] == pytest.approx(list(range(10)))
    assert sum(model.batch_sizes) == 10 and max(model.batch_sizes) == 4
    assert len(model.batch_sizes) == 3  # 4 + 4 + 2, not 10 single calls


async def test_a_lone_request_waits_max_wait_for_company_and_no_longer():
    batcher = MicroBatcher(RecordingModel(), max_batch=8, max_wait_ms=100, queue_size=4)
    await batcher.start()
    try:
        result = await batcher.predict(*_input(3))
    finally:
        await batcher.stop()
    # Waits the 100 ms for company, then goes alone; a wait 10x too long (1 s) would be far outside the
    # bound, which leaves a loaded machine 400 ms of scheduling slack.
    assert 95 <= result.queue_ms < 500
    assert result.batch_size == 1


@contextlib.asynccontextmanager
async def paused_model_batcher(**options):
    """A started batcher over a RecordingModel that holds every batch until `model.release` is set."""
    model = RecordingModel()
    model.release.clear()
    batcher = MicroBatcher(model, max_wait_ms=0, **options)
    await batcher.start()
    try:
        yield model, batcher
    finally:
        model.release.set()
        await batcher.stop()


async def _until_in_model(model: RecordingModel) -> None:
    while not model.entered.is_set():
        await asyncio.sleep(0.01)


def _sweep(value: float, n: int):
    """predict_many's arguments for n copies of one input."""
    return zip(*[_input(value)] * n, strict=True)


async def test_full_queue_answers_overloaded_at_once():
    async with paused_model_batcher(max_batch=1, queue_size=2) as (model, batcher):
        in_model = asyncio.ensure_future(batcher.predict(*_input(1)))
        await _until_in_model(model)
        queued = [asyncio.ensure_future(batcher.predict(*_input(v))) for v in (2, 3)]
        await asyncio.sleep(0.05)
        assert batcher.depth == 2
        with pytest.raises(Overloaded) as info:
            await batcher.predict(*_input(4))
        assert info.value.retry_after >= 1
        with pytest.raises(Overloaded):  # a sweep that does not fit is refused whole
            await batcher.predict_many(*_sweep(5, 2))
        model.release.set()
        results = await asyncio.gather(in_model, *queued)
        assert [r.score for r in results] == pytest.approx([0.01, 0.02, 0.03])


async def test_a_sweep_is_admitted_whole_or_refused_before_any_of_it_runs():
    async with paused_model_batcher(max_batch=2, queue_size=4) as (model, batcher):
        in_model = asyncio.ensure_future(batcher.predict(*_input(1)))
        await _until_in_model(model)
        queued = asyncio.ensure_future(batcher.predict(*_input(2)))
        await asyncio.sleep(0.05)
        # 3 free places: the sweep's first chunk of 2 would fit, the whole sweep of 4 does not.
        sweep = asyncio.ensure_future(batcher.predict_many(*_sweep(9, 4)))
        await asyncio.sleep(0.05)
        assert sweep.done() and isinstance(sweep.exception(), Overloaded)
        model.release.set()
        assert [r.score for r in await asyncio.gather(in_model, queued)] == pytest.approx([0.01, 0.02])
        assert sum(model.batch_sizes) == 2  # none of the refused sweep reached the model


async def test_an_admitted_sweep_keeps_its_room_while_its_chunks_run():
    async with paused_model_batcher(max_batch=2, queue_size=4) as (model, batcher):
        sweep = asyncio.ensure_future(batcher.predict_many(*_sweep(5, 4)))
        await _until_in_model(model)  # the first chunk is in the model, the other two inputs not queued yet
        with pytest.raises(Overloaded):  # the queue is empty, but two of its four places are the sweep's
            await batcher.predict_many(*_sweep(1, 3))
        model.release.set()
        assert [r.score for r in await sweep] == pytest.approx([0.05] * 4)
        # an oversized sweep (6 > queue_size) still runs when it has the queue to itself
        assert len(await batcher.predict_many(*_sweep(6, 6))) == 6
        assert batcher._reserved == 0


async def test_stop_finishes_queued_work_then_refuses():
    model = RecordingModel()
    batcher = MicroBatcher(model, max_batch=2, max_wait_ms=100, queue_size=8)
    await batcher.start()
    pending = [asyncio.ensure_future(batcher.predict(*_input(v))) for v in range(5)]
    await asyncio.sleep(0)
    await batcher.stop()
    results = await asyncio.wait_for(asyncio.gather(*pending), timeout=1)
    assert [r.score for r in results] == pytest.approx([v / 100 for v in range(5)])
    with pytest.raises(Overloaded):
        await batcher.predict(*_input(1))


async def test_model_failure_reaches_every_waiting_request():
    def broken(images, audio):
        raise RuntimeError("boom")

    batcher = MicroBatcher(broken, max_batch=4, max_wait_ms=20, queue_size=8)
    await batcher.start()
    try:
        results = await asyncio.gather(
            *(batcher.predict(*_input(v)) for v in range(3)), return_exceptions=True
        )
        assert all(isinstance(r, RuntimeError) for r in results)
        assert (await asyncio.gather(batcher.predict(*_input(1)), return_exceptions=True))[0].args == (
            "boom",
        )
    finally:
        await batcher.stop()


async def test_dispatch_when_idle_runs_a_lone_input_at_once():
    model = RecordingModel()
    batcher = MicroBatcher(model, max_batch=4, max_wait_ms=400, queue_size=16, dispatch_when_idle=True)
    await batcher.start()
    try:
        result = await batcher.predict(*_input(1))
    finally:
        await batcher.stop()
    assert result.queue_ms < 200 and model.batch_sizes == [1]  # not the 400 ms wait for company


async def test_dispatch_when_idle_still_waits_for_a_request_on_its_way():
    model = RecordingModel()
    batcher = MicroBatcher(model, max_batch=4, max_wait_ms=2000, queue_size=16, dispatch_when_idle=True)
    await batcher.start()

    async def late_request():
        with batcher.expecting():  # "decoding" for 100 ms, then queued
            await asyncio.sleep(0.1)
        return await batcher.predict(*_input(2))

    try:
        late = asyncio.create_task(late_request())
        await asyncio.sleep(0.01)  # the late request is already marked when the first one queues
        first, second = await asyncio.gather(batcher.predict(*_input(1)), late)
    finally:
        await batcher.stop()
    assert model.batch_sizes == [2] and first.batch_id == second.batch_id
    assert first.queue_ms < 1000  # it waited for the second, not for the whole max_wait


@pytest.mark.parametrize("lanes", [1, 2])
async def test_lanes_run_that_many_batches_at_once(lanes):
    # Every model call waits (up to 2 s) for a second call to be in flight at the same time: only with two
    # lanes do two batches overlap.
    overlap = threading.Barrier(2)
    overlapped: list[bool] = []

    def run_batch(images, audio):
        try:
            overlap.wait(timeout=2)
            overlapped.append(True)
        except threading.BrokenBarrierError:
            overlapped.append(False)
        return np.zeros((len(images), 7, 7), np.float32), audio.mean(axis=1)

    batcher = MicroBatcher(run_batch, max_batch=1, max_wait_ms=0, queue_size=8, lanes=lanes)
    await batcher.start()
    try:
        results = await asyncio.gather(*(batcher.predict(*_input(v)) for v in range(2)))
    finally:
        await batcher.stop()
    assert [r.score for r in results] == pytest.approx([0.0, 0.01])
    assert overlapped == ([True, True] if lanes == 2 else [False, False])


def test_lanes_must_be_positive():
    with pytest.raises(ValueError, match="lanes"):
        MicroBatcher(RecordingModel(), lanes=0)


async def test_a_batch_that_cannot_be_stacked_fails_its_requests_and_the_batcher_goes_on():
    batcher = MicroBatcher(RecordingModel(), max_batch=2, max_wait_ms=200, queue_size=8)
    await batcher.start()
    try:
        odd_image = np.zeros((5, 5, 3), np.uint8)  # a different size from _input's 4 x 4
        outcomes = await asyncio.wait_for(
            asyncio.gather(
                batcher.predict(*_input(1)), batcher.predict(odd_image, _input(2)[1]), return_exceptions=True
            ),
            timeout=5,
        )
        assert all(isinstance(outcome, ValueError) for outcome in outcomes)
        assert (await asyncio.wait_for(batcher.predict(*_input(3)), timeout=5)).score == pytest.approx(0.03)
    finally:
        await batcher.stop()
