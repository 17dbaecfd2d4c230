"""`fnac score --engine local` (the default): this process decodes with its workers (threads or processes),
runs the model in batches of windows and appends each finished item to one JSONL file."""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from fnac import pipeline
from fnac.runtime import ModelRuntime
from training.score_inputs import DecodeJob, Failure, Item, decode_item, decoder_crashed, unique_items
from training.score_output import JsonlFile
from training.score_rows import Summary, infer, item_rows, prepare


def _decode_in_order(
    items: Sequence[Item], job: DecodeJob, workers: int, pool: str
) -> Iterator[tuple[Item, pipeline.DecodedInput | Failure]]:
    """`decode_item` over `items` with the pipeline's ordered parallel decoding; a decoder that crashes its
    process fails that item (``decoder_crashed``)."""

    yield from pipeline.decode_in_order(
        items, functools.partial(decode_item, job=job), workers=workers, pool=pool, on_crash=decoder_crashed
    )


def score_items(
    items: Sequence[Item] | Sequence[str | Path],
    model: str | Path | ModelRuntime,
    output: str | Path,
    *,
    workers: int = 2,
    pool: str = "thread",
    retry_failed: bool = False,
    progress: bool = False,
    on_item: Callable[[str], None] | None = None,
    **options,
) -> Summary:
    """Score `items` (Items, or input paths for `find_items`) with an ONNX model, appending to the JSONL file
    `output` and skipping ids already there. Returns the run's summary.

    `options` are those of `prepare` (stride, batch_size, png_dir, sounding_threshold, ...): the sounding
    threshold defaults to the model's calibrated value (else the service's fallback); boxes and normalisation
    follow `fnac.postprocess`. `on_item(id)` is called after each item's lines are written.
    """
    started = time.perf_counter()
    items = unique_items(items)
    setup = prepare(model, **options)
    runtime, batch_size = setup.runtime, options.get("batch_size", 16)

    with JsonlFile(Path(output), retry_failed=retry_failed) as out:
        finished = out.existing.done | out.existing.failed
        todo = [item for item in items if item.id not in finished]
        summary = Summary(skipped=len(items) - len(todo), output=out.label)
        bar = None
        if progress and todo:
            from tqdm import tqdm

            bar = tqdm(total=len(todo), desc="score", unit="item", dynamic_ncols=True, file=sys.stderr)

        def write(item: Item, lines: list[dict]) -> None:
            out.write(lines)  # all of an item's lines in one flushed write: a kill cuts at most the last line
            summary.count(lines, bar)
            if on_item is not None:
                on_item(item.id)

        def flush(batch: list[tuple[Item, pipeline.DecodedInput]]) -> None:
            for item, decoded, outcome in infer(runtime, batch, batch_size):
                write(item, item_rows(item, decoded, outcome, setup))

        pending: list[tuple[Item, pipeline.DecodedInput]] = []
        n_windows = 0
        try:
            for item, decoded in _decode_in_order(todo, setup.job, workers, pool):
                if isinstance(decoded, Failure):
                    write(item, item_rows(item, decoded, None, setup))
                    continue
                pending.append((item, decoded))
                n_windows += len(decoded.times)
                if n_windows >= batch_size:
                    flush(pending)
                    pending, n_windows = [], 0
            flush(pending)
        finally:
            if bar is not None:
                bar.close()
    summary.seconds = time.perf_counter() - started
    return summary
