"""The `bigimg` command line. Bad input: one line on stderr, exit code 2.

Start-up is fast: this module imports only click; each command imports what it
needs (dask, xarray, zarr, distributed) after its arguments are parsed, so
``bigimg --help`` and a refused argument answer at once. A Ctrl-C at any point,
start-up included, prints one line.
"""

from __future__ import annotations

import os
import signal
import sys
import threading


def _interrupted_at_start(signum: int, frame: object) -> None:
    """Ctrl-C while the command starts (before :func:`main` runs): one line, exit 130."""
    os.write(2, b"bigimg: interrupted\n")
    os._exit(130)


def _started_as_command() -> bool:
    """True in the ``bigimg`` script or ``python -m bigimg``, not when imported by a program."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    name = os.path.basename(sys.argv[0] if sys.argv else "")
    return name in ("bigimg", "bigimg.exe") or getattr(spec, "name", None) == "bigimg.__main__"


if (
    _started_as_command()
    and threading.current_thread() is threading.main_thread()  # signals: main thread only
    and signal.getsignal(signal.SIGINT) is signal.default_int_handler
):
    signal.signal(signal.SIGINT, _interrupted_at_start)

import _thread  # noqa: E402
import atexit  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from contextlib import contextmanager, suppress  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import click  # noqa: E402

EXIT_BAD_INPUT = 2
EXIT_BUG = 1
EXIT_INTERRUPTED = 130
# errors that mean "the user's input is wrong": reported in one line, exit 2
# (OSError covers missing files, permissions and an unreachable scheduler)
_USER_ERRORS = (ValueError, TypeError, OSError)


def _progress(quiet: bool) -> bool:
    return not quiet and sys.stderr.isatty()


def cluster_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--scheduler / --scheduler-file / --workers / --memory-limit, shared by commands."""
    for opt in reversed(
        [
            click.option(
                "--scheduler",
                default=None,
                help="Address of an existing Dask scheduler (tcp://host:port).",
            ),
            click.option(
                "--scheduler-file",
                default=None,
                type=click.Path(),
                help="Scheduler file of an existing cluster.",
            ),
            click.option(
                "--workers",
                default=None,
                type=click.IntRange(min=1),
                help="Workers of the embedded LocalCluster.",
            ),
            click.option(
                "--memory-limit", default=None, help="Memory limit per embedded worker, e.g. 4GB."
            ),
            click.option("--quiet", is_flag=True, help="No progress bar."),
        ]
    ):
        func = opt(func)
    return func


@contextmanager
def _cluster(
    scheduler: str | None, scheduler_file: str | None, workers: int | None, memory_limit: str | None
) -> Iterator[Any]:
    from bigimg.cluster import Cluster

    with (
        _quiet_distributed(),
        Cluster(
            scheduler, scheduler_file=scheduler_file, n_workers=workers, memory_limit=memory_limit
        ) as client,
    ):
        yield client


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="bigimg")
@click.option(
    "--tls-ca-file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="CA certificate for TLS to an existing cluster (tls://…).",
)
@click.option(
    "--tls-cert",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Client certificate for TLS.",
)
@click.option(
    "--tls-key",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Client private key for TLS.",
)
def cli(tls_ca_file: str | None, tls_cert: str | None, tls_key: str | None) -> None:
    """bigimg: process images far larger than memory with Dask and Zarr.

    TLS settings may also come from dask's config (distributed.comm.tls.*).
    """
    tls = {"ca-file": tls_ca_file, "client.cert": tls_cert, "client.key": tls_key}
    given = {f"distributed.comm.tls.{k}": v for k, v in tls.items() if v is not None}
    if given:
        import dask

        dask.config.set({**given, "distributed.comm.require-encryption": True})


@cli.command()
@click.argument("config", type=click.Path())
@cluster_options
@click.option(
    "--resume", is_flag=True, help="Finish an interrupted output without recomputing stored chunks."
)
@click.option("--overwrite", is_flag=True, help="Replace an existing output store.")
@click.option(
    "--pyramid",
    is_flag=True,
    default=None,
    help="Also write coarsened levels (OME-NGFF multiscales).",
)
@click.option(
    "--cog",
    is_flag=True,
    help="Write a Cloud-Optimized GeoTIFF (output.path must end in .tif) instead of Zarr.",
)
def run(
    config: str,
    scheduler: str | None,
    scheduler_file: str | None,
    workers: int | None,
    memory_limit: str | None,
    quiet: bool,
    resume: bool,
    overwrite: bool,
    pyramid: bool | None,
    cog: bool,
) -> None:
    """Run the pipeline described by CONFIG (TOML)."""
    if not os.path.exists(config):  # refused before the pipeline modules load
        raise FileNotFoundError(f"config: no such file: {str(Path(config))!r}")
    from bigimg.pipeline import load_config

    pipeline = load_config(config)  # validated before any cluster starts
    if cog:
        pipeline = pipeline.as_cog()
    pipeline.check(overwrite=overwrite, resume=resume)
    note = pipeline.plan_note()
    if note and _progress(quiet):
        click.echo(note, err=True)
    with _cluster(scheduler, scheduler_file, workers, memory_limit):
        result = pipeline.run(
            overwrite=overwrite, resume=resume, progress=_progress(quiet), pyramid=pyramid or None
        )
    if hasattr(result, "chunks_written"):
        click.echo(
            f"wrote {result.path} ({result.chunks_written} chunks written, "
            f"{result.chunks_skipped} already stored) in {result.seconds:.1f} s"
        )
    else:
        click.echo(
            f"wrote {result.path} (COG, {len(result.overviews)} overviews) in {result.seconds:.1f} s"
        )


@cli.command()
@click.argument("store", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the description as JSON.")
@click.option(
    "--hist",
    "hist_png",
    type=click.Path(),
    default=None,
    help="Also compute the global histogram and draw it with its CDF to this PNG.",
)
@click.option("--exclude", default=None, help="With --hist: values not counted, e.g. 0,255.")
@click.option("--overwrite", is_flag=True, help="With --hist: replace an existing PNG.")
def info(
    store: str, as_json: bool, hist_png: str | None, exclude: str | None, overwrite: bool
) -> None:
    """Describe STORE: dims, chunks, dtype, completeness, provenance (never modifies it)."""
    from bigimg.files import check_disjoint, check_new_object, check_png_name, is_url

    if hist_png is None and exclude is not None:
        raise click.BadParameter(
            "counts only with --hist PNG (it leaves values out of the histogram)",
            param_hint="--exclude",
        )
    if hist_png is None and overwrite:
        raise click.BadParameter(
            "applies only with --hist PNG (it replaces that PNG)", param_hint="--overwrite"
        )
    local = store[len("file://") :] if store.lower().startswith("file://") else store
    if not is_url(store) and not os.path.exists(os.path.expanduser(local)):  # before zarr loads
        raise FileNotFoundError(f"store: no such Zarr store: {store!r}")
    if hist_png is not None:  # refuse before reading anything
        check_disjoint(hist_png, [store], what="--hist")
        check_new_object(hist_png, overwrite=overwrite, what="--hist")
        check_png_name(hist_png, what="--hist")
    from bigimg.io import store_info

    desc = store_info(store)
    if as_json:
        click.echo(json.dumps(desc, indent=2))
    else:
        for key, value in desc.items():
            click.echo(f"{key:>15}: {value}")
    if hist_png is not None:
        from bigimg.histogram import histogram, plot_histogram
        from bigimg.io import open_zarr

        excluded = [] if exclude is None else _number_list(exclude, "--exclude", float)
        plot_histogram(
            histogram(open_zarr(store), exclude=excluded),
            hist_png,
            title=store.rstrip("/").rsplit("/", 1)[-1],
            overwrite=overwrite,
        )
        click.echo(f"histogram: {hist_png}", err=as_json)


@cli.command()
@click.option(
    "--size",
    default=8192,
    show_default=True,
    type=click.IntRange(min=16),
    help="Width of the map in pixels (its height is half that).",
)
@click.option(
    "--out",
    default="demo-output",
    show_default=True,
    type=click.Path(),
    help="Folder for the outputs (new, or an earlier demo's).",
)
@click.option("--overwrite", is_flag=True, help="Replace the outputs of an earlier demo.")
@click.option(
    "--synthetic",
    is_flag=True,
    help="A synthetic square mosaic (NoData 0) instead of the Blue Marble map.",
)
@cluster_options
def demo(
    size: int,
    out: str,
    overwrite: bool,
    synthetic: bool,
    scheduler: str | None,
    scheduler_file: str | None,
    workers: int | None,
    memory_limit: str | None,
    quiet: bool,
) -> None:
    """Reproject NASA's Blue Marble to Mollweide (NoData outside the globe) and run the demo
    pipelines on it: a Gaussian stretch that leaves NoData out, and filter + equalization."""
    from bigimg.demo import check_demo_outputs, run_demo

    check_demo_outputs(out, overwrite=overwrite)  # before starting a cluster
    t0 = time.perf_counter()
    with _cluster(scheduler, scheduler_file, workers, memory_limit) as client:
        click.echo(f"cluster: {client.dashboard_link}")
        timings = run_demo(
            out, size=size, overwrite=overwrite, progress=_progress(quiet), synthetic=synthetic
        )
    for stage, secs in timings.items():
        click.echo(f"{stage:>16}: {secs:7.1f} s")
    click.echo(f"{'total':>16}: {time.perf_counter() - t0:7.1f} s")
    outp = Path(out)
    click.echo(
        f"map: {outp / 'mosaic.zarr'}\nstretched: {outp / 'stretched.zarr'}\n"
        f"filtered + equalized: {outp / 'output.zarr'}\n"
        f"quick-looks: {outp / 'raw.png'}, {outp / 'stretched.png'}, {outp / 'quicklook.png'}"
    )


# --- commands added by capability modules go below this line ---


def _parse_shape(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, ...]:
    parts = value.lower().split("x")
    if not 2 <= len(parts) <= 3 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise click.BadParameter(
            f"expected positive integers like 65536x65536 (y x [band]), got {value!r}"
        )
    return tuple(int(p) for p in parts)


@cli.command()
@click.argument("out", type=click.Path())
@click.option(
    "--shape",
    required=True,
    callback=_parse_shape,
    help="Size as YxX or YxXxBAND, e.g. 65536x65536.",
)
@click.option(
    "--length-scale", required=True, type=float, help="Std of the Gaussian kernel in pixels (> 0)."
)
@click.option(
    "--seed", default=0, show_default=True, type=click.IntRange(min=0), help="Generator seed."
)
@click.option(
    "--chunks",
    default=None,
    type=click.IntRange(min=1),
    help="Chunk side in pixels [default: the field's tiling].",
)
@click.option("--mean", default=0.0, show_default=True, type=float, help="Mean of every pixel.")
@click.option(
    "--std", default=1.0, show_default=True, type=float, help="Standard deviation of every pixel."
)
@click.option(
    "--truncate", default=4.0, show_default=True, type=float, help="Kernel radius in length scales."
)
@click.option(
    "--dtype", default="float32", show_default=True, type=click.Choice(["float32", "float64"])
)
@click.option("--overwrite", is_flag=True, help="Replace an existing output store.")
@click.option(
    "--resume", is_flag=True, help="Finish an interrupted output without recomputing stored chunks."
)
@cluster_options
def noise(
    out: str,
    shape: tuple[int, ...],
    length_scale: float,
    seed: int,
    chunks: int | None,
    mean: float,
    std: float,
    truncate: float,
    dtype: str,
    overwrite: bool,
    resume: bool,
    scheduler: str | None,
    scheduler_file: str | None,
    workers: int | None,
    memory_limit: str | None,
    quiet: bool,
) -> None:
    """Write spatially correlated Gaussian noise to the Zarr store OUT."""
    from bigimg.io import to_zarr
    from bigimg.io.fingerprint import check_fingerprint, of_config
    from bigimg.io.location import Location
    from bigimg.io.store import check_output
    from bigimg.noise import correlated_noise

    field = correlated_noise(
        shape,
        length_scale=length_scale,
        seed=seed,
        chunks=chunks or "auto",
        mean=mean,
        std=std,
        truncate=truncate,
        dtype=dtype,
    )  # validated first
    config = [
        {
            "op": "correlated_noise",
            "shape": list(shape),
            "length_scale": length_scale,
            "seed": seed,
            "mean": mean,
            "std": std,
            "truncate": truncate,
            "dtype": dtype,
        }
    ]
    # refuse before starting a cluster
    fingerprint = of_config("correlated_noise", None, config)
    loc = Location.of(out)  # the one conversion of the output argument
    if check_output(loc, overwrite=overwrite, resume=resume) == "resume":
        check_fingerprint(loc, fingerprint)
    with _cluster(scheduler, scheduler_file, workers, memory_limit):
        result = to_zarr(
            field,
            loc,
            overwrite=overwrite,
            resume=resume,
            config=config,
            source="correlated_noise",
            fingerprint=fingerprint,
            progress=_progress(quiet),
        )
    click.echo(
        f"wrote {result.path} ({result.chunks_written} chunks written, {result.chunks_skipped} "
        f"already stored, {field.nbytes / 2**30:.2f} GiB) "
        f"in {result.seconds:.1f} s"
    )


def _number_list(text: str, option: str, cast: Callable[[str], Any]) -> list[Any]:
    try:
        return [cast(v) for v in text.split(",")]
    except ValueError:
        raise click.BadParameter(
            f"expected comma-separated numbers, got {text!r}", param_hint=option
        ) from None


@cli.command("quicklook")
@click.argument("store", type=click.Path())
@click.argument("out", type=click.Path())
@click.option(
    "--max-size",
    default=2048,
    show_default=True,
    type=click.IntRange(min=1),
    help="Longest side of the PNG in pixels.",
)
@click.option(
    "--bands",
    default=None,
    help="Band positions to show: one (grey) or three (RGB), e.g. 0,1,2. Default: the first three, or the first.",
)
@click.option(
    "--stretch", default="2,98", show_default=True, help="Percentiles mapped to black and white."
)
@click.option("--overwrite", is_flag=True, help="Replace an existing PNG.")
@cluster_options
def quicklook_cmd(
    store: str,
    out: str,
    max_size: int,
    bands: str | None,
    stretch: str,
    overwrite: bool,
    scheduler: str | None,
    scheduler_file: str | None,
    workers: int | None,
    memory_limit: str | None,
    quiet: bool,
) -> None:
    """Write a PNG preview OUT of STORE (any size; NoData transparent).

    From a store with a pyramid, reads the coarsest level at least --max-size pixels wide.
    """
    from bigimg.files import check_disjoint, check_new_object, check_png_name

    check_disjoint(out, [store], what="OUT")
    check_new_object(out, overwrite=overwrite, what="OUT")
    check_png_name(out, what="OUT")
    band_list = None if bands is None else _number_list(bands, "--bands", int)
    limits = _number_list(stretch, "--stretch", float)
    if len(limits) != 2:
        raise click.BadParameter(
            f"expected two percentiles lo,hi, got {stretch!r}", param_hint="--stretch"
        )
    from bigimg.io.api import open_for_quicklook
    from bigimg.quicklook import quicklook

    img = open_for_quicklook(store, max_size)
    with _cluster(scheduler, scheduler_file, workers, memory_limit):
        preview = quicklook(
            img,
            out,
            max_size=max_size,
            bands=band_list,
            stretch=(limits[0], limits[1]),
            overwrite=overwrite,
        )
    click.echo(f"wrote {out} ({preview.sizes['x']} x {preview.sizes['y']} px)")


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning every error into one line.

    Bad input, and errors raised inside tasks on the workers (a damaged
    chunk, a full or read-only disk), exit 2; Ctrl-C exits 130; anything
    else is a bug in bigimg and exits 1, still in one line. The workers' own
    logs are silenced; ``BIGIMG_DEBUG=1`` shows them and full tracebacks.
    """
    if os.environ.get("BIGIMG_DEBUG"):  # full tracebacks and worker logs for bug reports
        cli.main(args=argv, prog_name="bigimg", standalone_mode=False)
        return
    with _quiet_dask(), _interruptible():
        _run(argv)
    sys.exit(0)


def _run(argv: list[str] | None) -> None:
    """``cli.main`` with every error turned into one line and an exit code."""
    try:
        cli.main(args=argv, prog_name="bigimg", standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.exceptions.NoArgsIsHelpError as e:  # bare `bigimg`: its help, no "error:"
        click.echo(e.ctx.get_help() if e.ctx is not None else cli.get_help(click.Context(cli)))
        sys.exit(0)
    except (click.Abort, KeyboardInterrupt):
        if _reported.acquire(blocking=False):
            click.echo("bigimg: interrupted", err=True)
        _close_clusters_quietly()
        sys.exit(EXIT_INTERRUPTED)
    except click.ClickException as e:
        _fail(f"error: {e.format_message()}", EXIT_BAD_INPUT)
    except _USER_ERRORS as e:
        _fail(f"error: {_first_line(e)}", EXIT_BAD_INPUT)
    except Exception as e:
        if type(e).__name__ == "KilledWorker":  # distributed.scheduler.KilledWorker
            _fail(
                f"error: a worker died repeatedly while running a task ({_first_line(e)}); "
                "it may need more memory: raise --memory-limit or use smaller chunks",
                EXIT_BAD_INPUT,
            )
        _fail(
            f"internal error: {type(e).__name__}: {_first_line(e)} "
            "(this is a bug in bigimg; BIGIMG_DEBUG=1 shows the traceback)",
            EXIT_BUG,
        )


_interrupted = threading.Event()
_dropped = threading.Event()
_reported = threading.Lock()


def _on_interrupt(signum: int, frame: Any) -> None:
    """Ctrl-C: stop the run (KeyboardInterrupt), with a deadline.

    Python drops a KeyboardInterrupt raised while a garbage-collection
    callback runs ("Exception ignored in ..."), which would let the run go on;
    :func:`_unraisable` then keeps that traceback off the screen and delivers
    the interrupt again. The first Ctrl-C also starts a 10 s timer that ends
    the process, and a second Ctrl-C ends it at once. Either way the user
    sees one line.
    """
    if _dropped.is_set():  # the same Ctrl-C, delivered again by _unraisable
        _dropped.clear()
        raise KeyboardInterrupt
    if _interrupted.is_set():
        _exit_interrupted()
    _interrupted.set()
    timer = threading.Timer(10.0, _exit_interrupted)
    timer.daemon = True
    timer.start()
    raise KeyboardInterrupt


def _unraisable(previous: Callable[[Any], object]) -> Callable[[Any], None]:
    """A ``sys.unraisablehook`` for the run: our dropped Ctrl-C is raised again, silently.

    Other unraisable exceptions go to ``previous``.
    """

    def hook(unraisable: Any) -> None:
        if isinstance(unraisable.exc_value, KeyboardInterrupt) and _interrupted.is_set():
            _dropped.set()  # delivered later, from another thread, after the callback
            threading.Timer(0.05, _thread.interrupt_main, (signal.SIGINT,)).start()
            return
        previous(unraisable)

    return hook


def _close_clusters_quietly() -> None:
    """Close the LocalClusters a Ctrl-C left behind, without their tracebacks.

    A Ctrl-C while a LocalCluster starts leaves it half made; distributed's
    own exit hook then fails on its workers ("Exception ignored in atexit
    callback ... AssertionError: Status.init"). The command owns the
    process, so it closes them itself and drops that hook.
    """
    spec = sys.modules.get("distributed.deploy.spec")
    if spec is None:  # no cluster was ever started
        return
    atexit.unregister(spec.close_clusters)
    for cluster in list(spec.SpecCluster._instances):
        with suppress(Exception):
            cluster.close(timeout=10)


def _exit_interrupted() -> None:
    if _reported.acquire(blocking=False):
        click.echo("bigimg: interrupted", err=True)
    os._exit(EXIT_INTERRUPTED)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _fail(message: str, code: int) -> None:
    click.echo(f"bigimg: {message}", err=True)
    sys.exit(code)


@contextmanager
def _quiet_dask() -> Iterator[None]:
    """Silence distributed's logs and worker warnings (in the workers started meanwhile).

    Only environment variables, read when distributed is imported (by
    :func:`_quiet_distributed`, for the commands that start or reach a
    cluster) and by every worker process. Everything is restored on the way
    out, so calling :func:`main` in-process (as tests do) leaves the caller's
    environment as it was.
    """
    saved = {k: os.environ.get(k) for k in ("DASK_LOGGING__DISTRIBUTED", "PYTHONWARNINGS")}
    os.environ["DASK_LOGGING__DISTRIBUTED"] = "critical"  # read by every worker process
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextmanager
def _quiet_distributed() -> Iterator[None]:
    """Silence distributed's loggers (and asyncio's) while a command uses a cluster.

    Restored on the way out.
    """
    import logging

    import distributed  # noqa: F401  (configures its loggers; then quiet them here too)

    loggers = [  # asyncio: "Task exception was never retrieved" of a gather a Ctrl-C cancelled
        logging.getLogger(name)
        for name in dict.fromkeys(["asyncio", *logging.root.manager.loggerDict])
        if name in ("asyncio", "distributed") or name.startswith("distributed.")
    ]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


@contextmanager
def _interruptible() -> Iterator[None]:
    """Ctrl-C handled by :func:`_on_interrupt` for the duration of the command."""
    if threading.current_thread() is not threading.main_thread():  # signals: main thread only
        yield
        return
    previous = signal.signal(signal.SIGINT, _on_interrupt)
    previous_hook = sys.unraisablehook
    sys.unraisablehook = _unraisable(previous_hook)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        sys.unraisablehook = previous_hook
