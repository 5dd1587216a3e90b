"""The `bigimg` command line. Bad input: one line on stderr, exit code 2."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

EXIT_BAD_INPUT = 2
# errors that mean "the user's input is wrong": reported in one line, exit 2
_USER_ERRORS = (ValueError, TypeError, FileNotFoundError, FileExistsError, NotADirectoryError, PermissionError)


def _progress(quiet: bool) -> bool:
    return not quiet and sys.stderr.isatty()


def cluster_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--scheduler / --scheduler-file / --workers / --memory-limit, shared by commands."""
    for opt in reversed(
        [
            click.option("--scheduler", default=None, help="Address of an existing Dask scheduler (tcp://host:port)."),
            click.option("--scheduler-file", default=None, type=click.Path(), help="Scheduler file of an existing cluster."),
            click.option("--workers", default=None, type=click.IntRange(min=1), help="Workers of the embedded LocalCluster."),
            click.option("--memory-limit", default=None, help="Memory limit per embedded worker, e.g. 4GB."),
            click.option("--quiet", is_flag=True, help="No progress bar."),
        ]
    ):
        func = opt(func)
    return func


@contextmanager
def _cluster(scheduler: str | None, scheduler_file: str | None, workers: int | None, memory_limit: str | None) -> Iterator[Any]:
    from bigimg.cluster import Cluster

    with Cluster(scheduler, scheduler_file=scheduler_file, n_workers=workers, memory_limit=memory_limit) as client:
        yield client


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="bigimg")
def cli() -> None:
    """bigimg: process images far larger than memory with Dask and Zarr."""


@cli.command()
@click.argument("config", type=click.Path())
@cluster_options
@click.option("--resume", is_flag=True, help="Finish an interrupted output without recomputing stored chunks.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output store.")
def run(config: str, scheduler: str | None, scheduler_file: str | None, workers: int | None,
        memory_limit: str | None, quiet: bool, resume: bool, overwrite: bool) -> None:
    """Run the pipeline described by CONFIG (TOML)."""
    from bigimg.pipeline import load_config

    pipeline = load_config(config)  # validated before any cluster starts
    with _cluster(scheduler, scheduler_file, workers, memory_limit):
        result = pipeline.run(overwrite=overwrite, resume=resume, progress=_progress(quiet))
    click.echo(
        f"wrote {result.path} ({result.chunks_written} chunks written, "
        f"{result.chunks_skipped} already stored) in {result.seconds:.1f} s"
    )


@cli.command()
@click.argument("store", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the description as JSON.")
def info(store: str, as_json: bool) -> None:
    """Describe STORE: dims, chunks, dtype, completeness, provenance."""
    from bigimg.io import store_info

    desc = store_info(store)
    if as_json:
        click.echo(json.dumps(desc, indent=2))
        return
    for key, value in desc.items():
        click.echo(f"{key:>15}: {value}")


@cli.command()
@click.option("--size", default=8192, show_default=True, type=click.IntRange(min=16), help="Mosaic side in pixels.")
@click.option("--out", default="demo-output", show_default=True, type=click.Path(), help="Folder for the outputs.")
@cluster_options
def demo(size: int, out: str, scheduler: str | None, scheduler_file: str | None, workers: int | None,
         memory_limit: str | None, quiet: bool) -> None:
    """Make a synthetic NoData-bordered mosaic and run the demo pipeline on it."""
    from bigimg.demo import run_demo

    t0 = time.perf_counter()
    with _cluster(scheduler, scheduler_file, workers, memory_limit) as client:
        click.echo(f"cluster: {client.dashboard_link}")
        timings = run_demo(out, size=size, progress=_progress(quiet))
    for stage, secs in timings.items():
        click.echo(f"{stage:>14}: {secs:7.1f} s")
    click.echo(f"{'total':>14}: {time.perf_counter() - t0:7.1f} s")
    outp = Path(out)
    click.echo(f"mosaic: {outp / 'mosaic.zarr'}\noutput: {outp / 'output.zarr'}\nquick-look: {outp / 'quicklook.png'}")


# --- commands added by capability modules go below this line ---


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning bad input into one line and exit code 2."""
    try:
        cli.main(args=argv, prog_name="bigimg", standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.Abort:
        click.echo("bigimg: aborted", err=True)
        sys.exit(1)
    except click.ClickException as e:
        click.echo(f"bigimg: error: {e.format_message()}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    except _USER_ERRORS as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        click.echo(f"bigimg: error: {msg}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    sys.exit(0)
