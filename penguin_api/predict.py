"""`penguin-api predict PATH...`: classify a photo, a folder or a bucket, no server needed.

Without --out it prints one JSON line per photo: the same JSON as POST /predict answers,
plus the photo's `"file"` (a photo that cannot be read gets an `"error"` problem object,
as in a /predict/batch answer). With --out results.csv|.jsonl it writes the rows there,
and running the same command again resumes: photos already in the file are skipped and a
row cut short is redone. With --out gs://bucket/folder it is one Cloud Run Job task:
it takes its share of the photos (CLOUD_RUN_TASK_INDEX / CLOUD_RUN_TASK_COUNT) and writes
part-INDEX-of-COUNT.jsonl there; `penguin-api merge` joins the parts.

Exit status: 0 every photo answered, 1 some could not be read, 2 nothing could be done
(bad model, path or settings), 130 stopped by Ctrl-C or SIGTERM (what is written is kept).
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from penguin_api.batch.output import Output
    from penguin_api.batch.progress import Summary
    from penguin_api.config import Settings

LABEL = "penguin-api predict"
EXIT_SOME_FAILED, EXIT_ERROR, EXIT_INTERRUPTED = 1, 2, 130


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "paths", nargs="+", metavar="PATH",
        help="a photo, a folder (searched recursively for photos) or gs://bucket/prefix",
    )  # fmt: skip
    parser.add_argument(
        "--out", metavar="FILE",
        help="results.csv or results.jsonl (resumed if it exists), or gs://bucket/folder "
        "for a Cloud Run Job task's part; default: JSON lines on standard output",
    )  # fmt: skip
    parser.add_argument(
        "--workers", type=_positive_int, metavar="N",
        help="processes, one model session each (default: one per CPU)",
    )  # fmt: skip
    parser.add_argument("--model-dir", type=Path, help="model directory (default: $MODEL_DIR)")
    parser.add_argument(
        "--progress-every", type=float, default=30.0, metavar="SECONDS",
        help="seconds between progress lines when standard error is not a terminal "
        "(on a terminal a progress bar is drawn instead)",
    )  # fmt: skip


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


class _Stopped(Exception):  # noqa: N818 - a stop, not an error
    """SIGTERM arrived (Cloud Run stopping a task): end as Ctrl-C does."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise _Stopped


def run(args: argparse.Namespace) -> int:
    """Classify every photo the paths name; returns the exit status."""
    from penguin_api.batch import inputs
    from penguin_api.batch.output import OutputError
    from penguin_api.batch.pool import PoolError
    from penguin_api.batch.storage import StorageError
    from penguin_api.classifier import CARD_FILE, ModelCard, ModelError
    from penguin_api.config import Settings, SettingsError, available_cpus

    try:
        settings = Settings.from_env()
        model_dir = args.model_dir or settings.model_dir
        card = ModelCard.from_file(model_dir / CARD_FILE)
        keys = inputs.expand(args.paths)
        if not keys:
            raise StorageError(f"found no photos in {' '.join(args.paths)}")
        index, count = settings.cloud_run_task_index, settings.cloud_run_task_count
        share = inputs.share(keys, index, count)
        if count > 1:
            attempt = settings.cloud_run_task_attempt + 1
            _say(f"task {index} of {count} (attempt {attempt}): {len(share):,} of "
                 f"{len(keys):,} photos")  # fmt: skip
        out = _output(args.out, settings, card.version)
    except (SettingsError, ModelError, StorageError, OutputError) as exc:
        _say(str(exc))
        return EXIT_ERROR
    workers = args.workers or available_cpus()
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return _classify(args, settings, model_dir, share, out, workers)
    except (ModelError, StorageError, OutputError, PoolError) as exc:
        _say(str(exc))
        return EXIT_ERROR
    finally:
        signal.signal(signal.SIGTERM, previous)


def _say(message: str) -> None:
    print(f"{LABEL}: {message}", file=sys.stderr, flush=True)


def _output(out: str | None, settings: Settings, model_version: str) -> Output:
    from penguin_api.batch import output, storage

    if out is None:
        return output.StdoutOutput()
    if storage.is_gs(out):
        storage.GsPath.parse(out)
        return output.PartOutput(out, settings.cloud_run_task_index, settings.cloud_run_task_count)
    return output.FileOutput(Path(out), model_version)


def _classify(
    args: argparse.Namespace,
    settings: Settings,
    model_dir: Path,
    keys: list[str],
    out: Output,
    workers: int,
) -> int:
    """Run the pool over what is left to do, write, report; the exit status."""
    from penguin_api.batch.pool import Pool, WorkerConfig
    from penguin_api.batch.progress import Progress, Summary, rate_line
    from penguin_api.batch.rows import Outcome

    summary = Summary()
    for outcome in out.earlier.outcomes:
        summary.add(outcome)
    done = out.earlier.done
    todo = [k for k in keys if k not in done]
    if done:
        _say(f"{out.description} already holds {len(done):,} photos; {len(todo):,} to go")
    if out.earlier.cut_short:
        _say(f"{out.description}: its last row was cut short (a run stopped mid-write); redone")
    config = WorkerConfig(
        model_dir=model_dir, threads=settings.ort_intra_op_threads, top_k=settings.top_k,
        max_pixels=settings.max_image_pixels,
    )  # fmt: skip
    chunk = 8
    processes = max(1, min(workers, -(-len(todo) // chunk)))
    bar = sys.stderr.isatty() and not (args.out is None and sys.stdout.isatty())
    pool = progress = None
    seconds = 0.0
    try:
        if todo:
            pool = Pool(processes, config, chunk_size=chunk)
            out.begin(pool.answer_template or {})
        progress = Progress(len(todo), stream=sys.stderr, bar=bar, every=args.progress_every,
                            label=LABEL)  # fmt: skip
        started = time.monotonic()
        for rows in pool.classify(todo) if pool else ():
            out.write(rows)
            for row in rows:
                summary.add(Outcome.of(row))
            progress.update(len(rows))
        seconds = time.monotonic() - started
        progress.close()
        if pool:
            pool.close()
        out.finish()
    except (KeyboardInterrupt, _Stopped):
        if pool:
            pool.terminate()
        out.abandon()
        if progress:
            progress.close()
        written = progress.done if progress else 0
        _say(f"stopped: {written:,} of {len(todo):,} photos written this run. "
             + ("Run the same command again to finish." if args.out else ""))  # fmt: skip
        _report(summary, out)
        return EXIT_INTERRUPTED
    except BaseException:
        if pool:
            pool.terminate()
        out.abandon()
        raise
    print(rate_line(LABEL, len(todo), seconds, processes if todo else 0, len(done)),
          file=sys.stderr)  # fmt: skip
    _report(summary, out)
    return EXIT_SOME_FAILED if summary.failed else 0


def _report(summary: Summary, out: Output) -> None:
    for line in summary.lines(out.description):
        print(line, file=sys.stderr)
    sys.stderr.flush()
