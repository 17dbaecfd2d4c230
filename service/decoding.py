"""Decoding uploads in isolated worker processes.

Decoders (FFmpeg, image codecs) run on untrusted bytes, so they run in separate processes: a crash
(segfault, OOM kill) or a hang costs one request and one worker, which is killed and replaced; the server
carries on. Each job has a hard time limit. The jobs are the pipeline's decode stages
(`fnac.pipeline.decode_video`, `fnac.pipeline.decode_image_audio`), which also do the resizing, so only
model-sized arrays come back.

Each worker shares a block of memory with the server (`_Arena`): the uploads go in and the decoded arrays come
out through it, and only small messages cross the pipe. A pipe moves a few hundred kilobytes in many
64-kilobyte turns between the two processes, each turn a wake-up and two kernel copies; under load that cost
rivalled the decoding itself. A job whose uploads or results do not fit the block travels over the pipe, as
every job does where there is no `memfd_create` (not Linux) or with `shared_bytes=0`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mmap
import multiprocessing
import os
import pickle
import signal
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing import reduction

from fnac import media

log = logging.getLogger("fnac.decoding")


WORKER_STARTUP_S = 60.0  # longest wait for a replacement worker to come up before its job is sent
SHARED_BYTES = 16 << 20  # shared memory per worker (virtual: pages are taken as jobs first touch them)
SHARED_MIN_PART = 16 << 10  # smaller uploads ride along with the job's message


class DecodeFailed(media.MediaError):
    """The decoder timed out, crashed or failed unexpectedly on this upload."""


def ping() -> int:
    return os.getpid()


# ---------------------------------------------------------------------------------------------- shared memory


@dataclass(frozen=True)
class _Shared:
    """Stands in a job's message for an upload placed in the worker's arena."""

    offset: int
    length: int


class _Arena:
    """A block of memory shared by the server and one worker: an anonymous memfd, mapped by both (the worker
    gets the descriptor over the pipe). One job at a time uses it, from the job's send to its answer: the
    server puts the uploads in and the worker takes them; the worker puts the answer's arrays in and the
    server takes them. What is taken is copied, so nothing refers to the block once the job is over."""

    ALIGN = 64

    def __init__(self, fd: int, size: int):
        self.fd, self.size = fd, size
        self.map = mmap.mmap(fd, size)

    @classmethod
    def create(cls, size: int) -> _Arena | None:
        """A new arena, or None where shared memory is unavailable (then everything goes over the pipe)."""
        if size <= 0 or not hasattr(os, "memfd_create"):
            return None
        try:
            fd = os.memfd_create("fnac-decode", os.MFD_CLOEXEC)
            os.ftruncate(fd, size)
            return cls(fd, size)
        except OSError as exc:
            log.warning("no shared memory for a decode worker (%s); its jobs go over the pipe", exc)
            return None

    def put(self, parts) -> list[tuple[int, int]] | None:
        """Copy bytes-like `parts` in, one after another; their (offset, length), or None if they do not fit."""
        spans, at = [], 0
        for part in parts:
            length = memoryview(part).nbytes
            spans.append((at, length))
            at += -(-length // self.ALIGN) * self.ALIGN
        if at > self.size:
            return None
        with memoryview(self.map) as view:
            for part, (offset, length) in zip(parts, spans, strict=True):
                with memoryview(part) as data:
                    view[offset : offset + length] = data.cast("B")
        return spans

    def take(self, spans, kind=bytearray) -> list:
        """Copies (`kind`: bytearray, or bytes) of the given (offset, length) stretches."""
        out = []
        with memoryview(self.map) as view:
            for offset, length in spans:
                if offset < 0 or length < 0 or offset + length > self.size:
                    raise ValueError(f"a stretch [{offset}, {offset + length}) outside the shared memory")
                out.append(kind(view[offset : offset + length]))
        return out

    def close(self) -> None:
        with contextlib.suppress(BufferError):  # a reader still holds a view (shutdown): it goes with that
            self.map.close()
        with contextlib.suppress(OSError):
            os.close(self.fd)


def _job_message(job, arena: _Arena | None):
    """The job as sent: uploads (bytes arguments of SHARED_MIN_PART or more) moved into the arena when they
    fit, each replaced by a `_Shared` marker."""
    fn, args, kwargs = job
    if arena is None:
        return job
    slots = [("a", i, v) for i, v in enumerate(args)] + [("k", k, v) for k, v in kwargs.items()]
    big = [(kind, key, v) for kind, key, v in slots if isinstance(v, bytes) and len(v) >= SHARED_MIN_PART]
    if not big:
        return job
    spans = arena.put([v for _, _, v in big])
    if spans is None:
        return job
    args, kwargs = list(args), dict(kwargs)
    for (kind, key, _), span in zip(big, spans, strict=True):
        if kind == "a":
            args[key] = _Shared(*span)
        else:
            kwargs[key] = _Shared(*span)
    return fn, tuple(args), kwargs


def _open_job(message, arena: _Arena | None):
    """In the worker: the job with its `_Shared` uploads read back as bytes."""
    fn, args, kwargs = message

    def resolve(value):
        if isinstance(value, _Shared):
            if arena is None:
                raise RuntimeError("an upload in shared memory that this worker cannot see")
            return arena.take([(value.offset, value.length)], bytes)[0]
        return value

    return fn, tuple(resolve(v) for v in args), {k: resolve(v) for k, v in kwargs.items()}


def _shared_answer(value, arena: _Arena | None):
    """In the worker: the answer with its large arrays written into the arena, ("ok_shared", pickle, spans),
    or None when there is no arena or they do not fit (the answer then goes over the pipe)."""
    if arena is None:
        return None
    buffers: list[pickle.PickleBuffer] = []
    data = pickle.dumps(value, protocol=5, buffer_callback=buffers.append)
    spans = arena.put([b.raw() for b in buffers]) if buffers else None
    return None if spans is None else ("ok_shared", data, spans)


# ---------------------------------------------------------------------------------------------- pool


def _worker_main(conn, malloc: tuple[int, int] = (0, 0), shared: bool = False) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the parent shuts us down
    if any(malloc):
        from service.memory import tune_malloc

        tune_malloc(*malloc)  # the server's settings (service/memory.py), before any decoder thread starts
    arena = None
    if shared:  # the arena's descriptor comes first, before any job
        try:
            fd = reduction.recv_handle(conn)
            arena = _Arena(fd, os.fstat(fd).st_size)
        except (EOFError, OSError):
            return
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError, KeyboardInterrupt):
            return
        try:
            fn, args, kwargs = _open_job(message, arena)
            outcome = ("ok", fn(*args, **kwargs))
        except media.MediaError as exc:
            outcome = ("media_error", exc)
        except Exception as exc:  # any other decoder failure is still about this upload
            outcome = ("error", f"{type(exc).__name__}: {exc}")
        if outcome[0] == "ok":
            try:
                outcome = _shared_answer(outcome[1], arena) or outcome
            except Exception as exc:  # an answer that cannot be pickled fails below, over the pipe, as before
                log.debug("answer not shared: %s", exc)
        try:
            conn.send(outcome)
        except (EOFError, OSError):
            return


class _WorkerContext:
    """The spawn context (never fork a process that runs threads), plus the glibc malloc settings
    (arena_max, mmap_threshold_kb) each worker applies at start (service.memory.tune_malloc)."""

    def __init__(self, malloc: tuple[int, int] = (0, 0), shared_bytes: int = 0):
        self.spawn = multiprocessing.get_context("spawn")
        self.malloc = malloc
        self.shared_bytes = shared_bytes

    def Pipe(self):
        return self.spawn.Pipe()

    def Process(self, **kwargs):
        return self.spawn.Process(**kwargs)


class _Worker:
    def __init__(self, context: _WorkerContext):
        self.conn, child_conn = context.Pipe()
        self.arena = _Arena.create(context.shared_bytes)
        self.process = context.Process(
            target=_worker_main,
            args=(child_conn, context.malloc, self.arena is not None),
            daemon=True,
            name="fnac-decode",
        )
        self.process.start()
        child_conn.close()
        if self.arena is not None:
            # If the process died at once, the first job finds out and replaces it.
            with contextlib.suppress(OSError):
                reduction.send_handle(self.conn, self.arena.fd, self.process.pid)
        self.jobs = 0  # jobs answered, for recycling

    def send(self, job) -> None:
        self.conn.send(_job_message(job, self.arena))

    def receive(self) -> tuple:
        """The next answer, with any arrays that came through the arena copied out of it."""
        outcome = self.conn.recv()
        if outcome[0] == "ok_shared":
            _, data, spans = outcome
            if self.arena is None:
                return ("error", "an answer in shared memory from a worker without any")
            try:
                return ("ok", pickle.loads(data, buffers=self.arena.take(spans)))
            except Exception as exc:
                return ("error", f"{type(exc).__name__}: {exc}")
        return outcome

    def wait_ready(self, timeout_s: float) -> None:
        """Block until the new process answers a ping (it imports the decoders first), at most `timeout_s`; a
        worker that does not answer is left as it is, and the job sent next finds out."""
        try:
            self.conn.send((ping, (), {}))
            if self.conn.poll(timeout_s):
                self.conn.recv()
        except (OSError, EOFError):
            pass

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=5)
        self.conn.close()
        if self.arena is not None:
            self.arena.close()


class DecodePool:
    """A fixed number of decode processes; `await pool.run(fn, ...)` runs fn(...) in one of them.

    At most `workers + backlog` jobs may be pending; beyond that `run` raises `PoolBusy` at once. With
    `max_jobs`, a worker that has answered that many jobs is retired between jobs and a fresh process takes its
    place (as a web server's `max_requests` does): whatever a decoder's heap gathered over thousands of uploads
    goes with it, so the workers' memory stays bounded however long the server runs.
    """

    def __init__(
        self,
        workers: int = 2,
        timeout_s: float = 30.0,
        backlog: int = 64,
        malloc: tuple[int, int] = (0, 0),
        *,
        max_jobs: int = 0,
        shared_bytes: int = SHARED_BYTES,
        task: str = "decoding the upload",
        timeout_code: str = "decode_timeout",
    ):
        self.workers = workers
        self.timeout_s = timeout_s
        self.task, self.timeout_code = task, timeout_code  # what a job does, for the timeout error
        self.capacity = workers + backlog
        self.max_jobs = max_jobs  # 0: never retire a worker that works
        self._context = _WorkerContext(malloc, shared_bytes)
        self._threads = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fnac-decode")
        self._idle: asyncio.Queue[_Worker] | None = None
        self._all: list[_Worker] = []
        self._pending = 0
        self._closed = False

    async def start(self) -> None:
        """Start the workers and wait until each has answered once."""
        self._idle = asyncio.Queue()
        self._all = [_Worker(self._context) for _ in range(self.workers)]
        # Process start-up and imports take seconds on a busy machine: wait for them apart from the job limit.
        await asyncio.gather(*(asyncio.to_thread(w.wait_ready, WORKER_STARTUP_S) for w in self._all))
        for worker in self._all:
            self._idle.put_nowait(worker)
        try:
            await asyncio.gather(*(self.run(ping) for _ in range(self.workers)))
        except DecodeFailed:
            self.close()
            raise RuntimeError(
                "decode worker processes failed to start; a script that builds the app must guard its "
                "entry point with `if __name__ == '__main__':` (workers are spawned, which re-imports __main__)"
            ) from None

    def pids(self) -> list[int]:
        return [w.process.pid for w in self._all if w.process.pid is not None]

    async def run(self, fn, /, *args, **kwargs):
        if self._idle is None:
            raise RuntimeError("DecodePool.start() was not awaited")
        if self._pending >= self.capacity:
            raise PoolBusy()
        self._pending += 1
        try:
            worker = await self._idle.get()
            job = asyncio.get_running_loop().run_in_executor(
                self._threads, self._call, worker, (fn, args, kwargs)
            )

            def release(done: asyncio.Future, taken: _Worker = worker) -> None:
                # The worker goes back only when its job is really over, even if this request was cancelled.
                ok = not done.cancelled() and done.exception() is None
                back = done.result()[0] if ok else taken
                if self.max_jobs and back.jobs >= self.max_jobs and not self._closed:
                    self._retire(back)
                else:
                    self._idle.put_nowait(back)

            job.add_done_callback(release)
            _, outcome = await asyncio.shield(job)
        finally:
            self._pending -= 1
        status, payload = outcome
        if status == "ok":
            return payload
        if status == "media_error":
            raise payload
        if status == "timeout":
            raise DecodeFailed(self.timeout_code, f"{self.task} took longer than {self.timeout_s:g} s")
        if status == "crash":
            raise DecodeFailed(
                "decoder_crashed", "the decoder crashed on this upload; the file is probably corrupt"
            )
        log.warning("decoder failed: %s", payload)
        raise DecodeFailed("decode_failed", "the upload could not be decoded (the decoder failed on it)")

    def _call(self, worker: _Worker, job) -> tuple[_Worker, tuple]:
        """Blocking: run one job on `worker`; returns the (possibly replaced) worker and the outcome.

        A worker that dies under a job gets one retry on a fresh worker, since it may have died for reasons of
        its own (killed while idle, OOM elsewhere); a second death is the upload's doing.
        """
        for attempt in (1, 2):
            if not worker.process.is_alive():  # died while idle: not this upload's fault
                worker = self._replace(worker, "died_idle")
            try:
                worker.send(job)
            except (OSError, EOFError):
                worker = self._replace(worker, "died_idle")
                try:
                    worker.send(job)
                except (OSError, EOFError):
                    # Hand back the fresh worker, not the dead one: the pool must keep the process it started
                    # (the next job finds it dead and replaces it).
                    return worker, ("crash", None)
            if not worker.conn.poll(self.timeout_s):
                return self._replace(worker, "timeout"), ("timeout", None)
            try:
                outcome = worker.receive()
                worker.jobs += 1
                return worker, outcome
            except (EOFError, OSError):
                worker = self._replace(worker, "crash")
                if attempt == 2 or self._closed:
                    break
        return worker, ("crash", None)

    def _replace(self, worker: _Worker, reason: str) -> _Worker:
        from service import metrics  # imported here: worker processes never need prometheus

        if self._closed:  # shutting down: do not start new processes
            worker.kill()
            return worker
        log.warning("decode worker pid %s %s; replacing it", worker.process.pid, reason.replace("_", " "))
        metrics.DECODE_WORKER_RESTARTS.labels(reason=reason).inc()
        worker.kill()
        # Starting a process and importing the decoders is not the upload's time: the job's limit starts after.
        return self._successor(worker)

    def _successor(self, worker: _Worker) -> _Worker:
        """Blocking: a fresh process in `worker`'s place in the pool, started and given up to WORKER_STARTUP_S
        to answer (`worker` itself is left to the caller)."""
        fresh = _Worker(self._context)
        self._all = [fresh if w is worker else w for w in self._all]
        fresh.wait_ready(WORKER_STARTUP_S)
        return fresh

    def _retire(self, worker: _Worker) -> None:
        """Replace a worker that has done its share, off the request path: the fresh process starts and imports
        in a thread while the other workers carry on, then takes the old one's place in the idle queue."""
        from service import metrics

        loop = asyncio.get_running_loop()

        def swap() -> None:
            fresh = self._successor(worker)
            if self._closed:  # close() may have missed the fresh one
                fresh.kill()
            else:
                loop.call_soon_threadsafe(self._idle.put_nowait, fresh)
            worker.kill()

        def done(future) -> None:
            if future.exception() is not None and worker in self._all:
                # No fresh process: the old one carries on (a dead one is replaced by the next job that finds it).
                log.warning("decode worker could not be recycled: %s", future.exception())
                self._idle.put_nowait(worker)

        log.info("decode worker pid %s answered %d jobs; recycling it", worker.process.pid, worker.jobs)
        metrics.DECODE_WORKER_RESTARTS.labels(reason="recycled").inc()
        loop.run_in_executor(None, swap).add_done_callback(done)

    def close(self) -> None:
        self._closed = True
        for worker in self._all:
            worker.kill()
        self._threads.shutdown(wait=False, cancel_futures=True)


class PoolBusy(Exception):
    """Too many uploads are waiting to be decoded."""
