import asyncio
import contextlib
import os
import signal
import time

import pytest

from fnac.media import MediaError
from service.decoding import DecodeFailed, DecodePool, PoolBusy

pytestmark = pytest.mark.anyio


# Jobs run in spawned worker processes, so they live at module level (importable by name).
def double(x):
    return 2 * x


def crash():
    os.kill(os.getpid(), signal.SIGKILL)


def hang():
    time.sleep(60)


def identify(tag):
    return os.getpid(), tag


def slow_identify(tag):
    time.sleep(1.0)
    return os.getpid(), tag


def crash_on_first_attempt(marker):
    """Dies the first time it runs (leaving `marker`), succeeds on the retry: a worker that died for reasons of
    its own, as far as the pool can tell."""
    if not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    return "second attempt"


def bad_media():
    raise MediaError("no_audio_stream", "audio stream missing in upload 'a.mp4'")


def unexpected():
    raise ZeroDivisionError("division by zero inside a decoder")


@pytest.fixture(scope="module")
async def pool():
    pool = DecodePool(workers=2, timeout_s=2.0, backlog=2)
    await pool.start()
    yield pool
    pool.close()


async def test_runs_jobs_in_other_processes(pool):
    from service.decoding import ping

    assert await pool.run(double, 21) == 42
    pids = set(await asyncio.gather(*(pool.run(ping) for _ in range(4))))
    assert os.getpid() not in pids and pids <= set(pool.pids())


async def test_media_errors_keep_their_code(pool):
    with pytest.raises(MediaError) as info:
        await pool.run(bad_media)
    assert info.value.code == "no_audio_stream"
    with pytest.raises(DecodeFailed) as info:
        await pool.run(unexpected)
    assert info.value.code == "decode_failed" and "ZeroDivision" not in info.value.message


async def test_a_crashing_job_costs_one_worker_not_the_pool(pool):
    before = set(pool.pids())
    slow = asyncio.ensure_future(pool.run(double, 5))  # in flight on the other worker meanwhile
    with pytest.raises(DecodeFailed) as info:
        await pool.run(crash)
    assert info.value.code == "decoder_crashed"
    assert await slow == 10
    assert len(set(pool.pids()) - before) == 1  # exactly one worker replaced
    assert await asyncio.gather(*(pool.run(double, i) for i in range(4))) == [0, 2, 4, 6]


async def test_a_hanging_job_is_killed_at_the_time_limit(pool):
    before = set(pool.pids())
    started = time.perf_counter()
    with pytest.raises(DecodeFailed) as info:
        await pool.run(hang)
    assert info.value.code == "decode_timeout"
    assert 1.9 < time.perf_counter() - started < 10
    assert len(before - set(pool.pids())) == 1  # the hung worker was killed and replaced
    assert len(pool.pids()) == 2
    assert await pool.run(double, 4) == 8


async def test_a_worker_killed_while_idle_is_replaced_transparently(pool):
    victim = pool.pids()[0]
    os.kill(victim, signal.SIGKILL)
    await asyncio.sleep(0.2)
    assert await asyncio.gather(*(pool.run(double, i) for i in range(4))) == [0, 2, 4, 6]
    assert victim not in pool.pids()


async def test_too_many_pending_jobs_are_refused(pool):
    # 2 workers + backlog 2 = 4 pending at most; the 5th is refused at once.
    hanging = [asyncio.ensure_future(pool.run(hang)) for _ in range(4)]
    await asyncio.sleep(0.1)
    with pytest.raises(PoolBusy):
        await pool.run(double, 1)
    results = await asyncio.gather(*hanging, return_exceptions=True)
    assert all(isinstance(r, DecodeFailed) and r.code == "decode_timeout" for r in results)
    assert await pool.run(double, 1) == 2


async def test_a_cancelled_request_does_not_hand_out_a_busy_worker(pool):
    # The cancelled job keeps its worker busy for 1 s; meanwhile both new jobs must run on the other worker
    # and get their own answers (a worker handed out while busy would mix up replies).
    running = asyncio.ensure_future(pool.run(slow_identify, "cancelled"))
    await asyncio.sleep(0.2)
    running.cancel()
    results = await asyncio.gather(pool.run(identify, "a"), pool.run(identify, "b"))
    assert [tag for _, tag in results] == ["a", "b"]
    assert results[0][0] == results[1][0]  # one worker served both
    await asyncio.sleep(1.0)
    assert await pool.run(double, 7) == 14


async def test_a_worker_that_dies_under_a_job_gets_one_retry_on_a_fresh_worker(pool, tmp_path):
    before = set(pool.pids())
    assert await pool.run(crash_on_first_attempt, str(tmp_path / "tried")) == "second attempt"
    assert len(before - set(pool.pids())) == 1


class _RefusingConnection:
    """A worker pipe whose sends fail, as when the process at the other end has just died."""

    def __init__(self, conn):
        self.conn = conn

    def send(self, obj):
        raise BrokenPipeError("the worker is gone")

    def __getattr__(self, name):
        return getattr(self.conn, name)


async def test_a_fresh_worker_that_cannot_take_the_job_is_kept_not_orphaned(monkeypatch):
    from service import decoding

    pool = DecodePool(workers=1, timeout_s=2.0)
    await pool.start()
    try:
        started = decoding._Worker.__init__

        def refusing(self, context):
            started(self, context)
            self.conn = _RefusingConnection(self.conn)

        pool._all[0].conn = _RefusingConnection(pool._all[0].conn)
        monkeypatch.setattr(decoding._Worker, "__init__", refusing)
        with pytest.raises(DecodeFailed) as info:
            await pool.run(double, 1)
        assert info.value.code == "decoder_crashed"
        monkeypatch.undo()
        # The idle worker is the process the pool started (and will replace and kill), not the dead one.
        idle = pool._idle.get_nowait()
        assert idle in pool._all and len(pool._all) == 1
        pool._idle.put_nowait(idle)
        assert await pool.run(double, 2) == 4
    finally:
        pool.close()


async def test_a_worker_that_did_its_share_is_recycled_between_jobs():
    """With max_jobs, a worker is retired after that many answers and a fresh process takes its place without
    any job failing or waiting on the start-up; the pool keeps its size and a retired process is gone."""
    pool = DecodePool(workers=1, timeout_s=5.0, max_jobs=3)
    await pool.start()  # the start-up ping is the first job
    try:
        first = pool.pids()[0]
        seen = [(await pool.run(identify, i))[0] for i in range(2)]
        assert seen == [first, first]  # ping + 2 jobs: this worker's share is done
        later = [(await pool.run(identify, i))[0] for i in range(3)]
        assert first not in later and len(set(later)) == 1 and pool.pids() == later[:1]
        assert len(pool._all) == 1
        for _ in range(50):  # the retired process is killed (and reaped) once its successor is ready
            try:
                os.kill(first, 0)
            except ProcessLookupError:
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail(f"the retired worker {first} is still running")
        assert [(await pool.run(double, 4))] == [8]
    finally:
        pool.close()


async def test_without_max_jobs_workers_are_kept():
    pool = DecodePool(workers=1, timeout_s=5.0)
    await pool.start()
    try:
        pids = {(await pool.run(identify, i))[0] for i in range(6)}
        assert pids == set(pool.pids())
    finally:
        pool.close()


async def test_a_worker_that_cannot_be_replaced_keeps_working(monkeypatch):
    """If the fresh process cannot be started, the retiring worker carries on (and is retired later)."""
    from service import decoding

    pool = DecodePool(workers=1, timeout_s=5.0, max_jobs=2)
    await pool.start()
    try:
        first = pool.pids()[0]
        started = decoding._Worker.__init__

        def no_process(self, context):
            raise OSError("cannot start a process now")

        async def back_in_the_pool():  # the failed replacement runs in a thread; wait for its outcome
            for _ in range(100):
                if pool._idle.qsize() == 1:
                    return
                await asyncio.sleep(0.05)
            pytest.fail("the worker did not come back to the pool")

        monkeypatch.setattr(decoding._Worker, "__init__", no_process)
        assert (await pool.run(identify, 1))[0] == first  # its second job: retiring fails, it stays
        await back_in_the_pool()
        assert (await pool.run(identify, 2))[0] == first
        await back_in_the_pool()
        monkeypatch.setattr(decoding._Worker, "__init__", started)
        assert (await pool.run(identify, 3))[0] == first  # after this one the retirement succeeds
        assert (await pool.run(identify, 4))[0] != first and len(pool._all) == 1
    finally:
        pool.close()


# ---------------------------------------------------------------------------------------------- shared memory


def arrays_from(image, audio):
    """A decode-shaped job: two uploads in, arrays out (a copy of each, and whether they came as bytes)."""
    import numpy as np

    assert isinstance(image, bytes) and isinstance(audio, bytes)
    return np.frombuffer(image, np.uint8).copy(), np.frombuffer(audio, np.float32) * 2


def wide_arrays_from(image, audio):
    """`arrays_from` with the audio answered in float64: an answer twice the size of that upload."""
    pixels, wave = arrays_from(image, audio)
    return pixels, wave.astype("float64")


class _RecordingConnection:
    """A worker pipe that records the size of every message it carries, pickled as the pipe pickles it."""

    def __init__(self, conn, sizes: list[int]):
        self.conn, self.sizes = conn, sizes

    def send(self, obj):
        from multiprocessing.reduction import ForkingPickler

        self.sizes.append(len(ForkingPickler.dumps(obj)))
        self.conn.send(obj)

    def recv(self):
        obj = self.conn.recv()
        from multiprocessing.reduction import ForkingPickler

        self.sizes.append(len(ForkingPickler.dumps(obj)))
        return obj

    def __getattr__(self, name):
        return getattr(self.conn, name)


async def _sizes_of_one_job(shared_bytes: int, image: bytes, audio: bytes, job=arrays_from):
    import numpy as np

    pool = DecodePool(workers=1, timeout_s=10.0, shared_bytes=shared_bytes)
    await pool.start()
    try:
        sizes: list[int] = []
        pool._all[0].conn = _RecordingConnection(pool._all[0].conn, sizes)
        pixels, wave = await pool.run(job, image, audio=audio)
        np.testing.assert_array_equal(pixels, np.frombuffer(image, np.uint8))
        np.testing.assert_array_equal(wave, np.frombuffer(audio, np.float32) * 2)
        assert pixels.flags.writeable and wave.flags.writeable  # the caller owns its arrays
        pixels[0] = 1  # and they are not views of memory the next job overwrites
        return sizes
    finally:
        pool.close()


async def test_uploads_and_arrays_go_through_shared_memory_not_the_pipe():
    import numpy as np

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, 300_000, dtype=np.uint8).tobytes()
    audio = rng.standard_normal(60_000).astype(np.float32).tobytes()  # 240 kB
    sent, answered = await _sizes_of_one_job(1 << 20, image, audio)
    assert sent < 2_000 and answered < 2_000  # markers and a pickle header, not 540 kB each way
    sent, answered = await _sizes_of_one_job(0, image, audio)  # shared memory off: the same answer by pipe
    assert sent > 540_000 and answered > 540_000


async def test_jobs_too_large_for_shared_memory_go_over_the_pipe():
    import numpy as np

    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, 40_000, dtype=np.uint8).tobytes()
    audio = rng.standard_normal(50_000).astype(np.float32).tobytes()  # 200 kB
    # 240 kB of uploads beyond a 128 kB block: the job travels by pipe, and so does its 240 kB answer.
    sent, answered = await _sizes_of_one_job(128 << 10, image, audio)
    assert sent > 240_000 and answered > 240_000
    # 100 kB of uploads fit, a 160 kB answer does not: uploads by shared memory, the answer by pipe.
    audio = audio[:60_000]
    sent, answered = await _sizes_of_one_job(128 << 10, image, audio, job=wide_arrays_from)
    assert sent < 2_000 and answered > 160_000
    sent, answered = await _sizes_of_one_job(128 << 10, image, audio)  # a 100 kB answer fits
    assert sent < 2_000 and answered < 2_000


async def test_replaced_workers_leave_no_descriptors_or_mappings_behind():
    """Every worker has its own shared block; a worker killed by a crash or a timeout takes it along."""

    def mappings() -> int:  # shared blocks mapped in this process (other pools of this module included)
        with open("/proc/self/maps") as maps:
            return sum("fnac-decode" in line for line in maps)

    def descriptors() -> int:  # open descriptors of shared blocks (other file descriptors come and go)
        count = 0
        for fd in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):  # closed meanwhile (the listing's own descriptor, ...)
                count += "memfd:fnac-decode" in os.readlink(f"/proc/self/fd/{fd}")
        return count

    before = mappings(), descriptors()
    pool = DecodePool(workers=1, timeout_s=2.0)
    await pool.start()
    try:
        await pool.run(double, 1)
        one_worker = mappings(), descriptors()  # the memfd, and mmap's own duplicate of it
        assert one_worker[0] == before[0] + 1 and one_worker[1] > before[1]
        for _ in range(3):
            with pytest.raises(DecodeFailed):
                await pool.run(crash)
        assert await pool.run(double, 2) == 4
        assert (mappings(), descriptors()) == one_worker
    finally:
        pool.close()
    assert (mappings(), descriptors()) == before
