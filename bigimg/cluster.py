"""Where the work runs: an embedded LocalCluster or any existing Dask cluster."""

from __future__ import annotations

import asyncio
import json
import os
import threading
from types import TracebackType
from typing import Any

# below this a worker cannot even start: the nanny restarts it forever
MIN_MEMORY_LIMIT = 256 * 2**20
CONNECT_TIMEOUT = 30.0  # seconds to reach and hear back from an existing scheduler
REFUSED_GRACE = 2.0  # seconds a refusing tcp:// port is retried (a scheduler still starting)


class Cluster:
    """Context manager yielding a ``distributed.Client``.

    Parameters
    ----------
    address : str, optional
        Scheduler address of an existing cluster (``"tcp://host:8786"``,
        ``"tls://…"``). Without it (and without ``scheduler_file``) a
        ``LocalCluster`` is started on 127.0.0.1, dashboard included.
    scheduler_file : str, optional
        Connect through a scheduler file written by ``dask scheduler``.
    n_workers : int, optional
        Workers of the LocalCluster (default: one per core, at most 4).
    memory_limit : str or int, optional
        Memory limit per LocalCluster worker (``"4GB"``); default: an even
        share of the machine.
    threads_per_worker : int, optional
        Threads per LocalCluster worker; default: the cores divided evenly.
    security : distributed.Security, optional
        TLS settings used when connecting to an existing cluster; default:
        dask's ``distributed.comm.tls`` configuration.
    connect_timeout : float, default 30
        Seconds allowed to reach an existing scheduler and get its answer.

    Raises
    ------
    ValueError
        Both ``address`` and ``scheduler_file``; a scheduler file that is not
        the JSON ``dask scheduler --scheduler-file`` writes; a memory limit that
        is not a size of at least 256 MiB; a bad ``n_workers``.
    FileNotFoundError
        No such scheduler file.
    TimeoutError, OSError
        (on entering) The scheduler cannot be reached or does not answer
        within ``connect_timeout`` seconds.

    Examples
    --------
    >>> import bigimg as bi
    >>> with bi.Cluster(n_workers=1, memory_limit="1GB") as client:  # doctest: +SKIP
    ...     print(client.dashboard_link)
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        scheduler_file: str | None = None,
        n_workers: int | None = None,
        memory_limit: str | int | None = None,
        threads_per_worker: int | None = None,
        security: Any = None,
        connect_timeout: float = CONNECT_TIMEOUT,
    ) -> None:
        if address is not None and scheduler_file is not None:
            raise ValueError("pass either address or scheduler_file, not both")
        if scheduler_file is not None:
            _scheduler_file_address(scheduler_file)
        if n_workers is not None and (not isinstance(n_workers, int) or n_workers < 1):
            raise ValueError(f"n_workers must be a positive int, got {n_workers!r}")
        if memory_limit is not None:
            _check_memory_limit(memory_limit)
        elif n_workers is not None and address is None and scheduler_file is None:
            _check_worker_count(n_workers)
        self.connect_timeout = connect_timeout
        self.address = address
        self.scheduler_file = scheduler_file
        self.n_workers = n_workers
        self.memory_limit = memory_limit
        self.threads_per_worker = threads_per_worker
        self.security = security
        self._cluster: Any = None
        self.client: Any = None

    def __enter__(self) -> Any:
        from distributed import Client, LocalCluster

        if self.address is None and self.scheduler_file is None:
            cores = os.cpu_count() or 1
            n = self.n_workers or min(cores, 4)
            threads = self.threads_per_worker or max(1, cores // n)
            self._cluster = LocalCluster(
                n_workers=n,
                threads_per_worker=threads,
                processes=True,
                host="127.0.0.1",
                dashboard_address="127.0.0.1:0",
                memory_limit=self.memory_limit if self.memory_limit is not None else "auto",
            )
            self.client = Client(self._cluster, set_as_default=True)
        else:
            kwargs: dict[str, Any] = {"set_as_default": True}
            if self.security is not None:
                kwargs["security"] = self.security
            address = self.address or _scheduler_file_address(self.scheduler_file or "")
            _probe(address, self.security, self.connect_timeout)
            if self.scheduler_file is not None:
                kwargs["scheduler_file"] = self.scheduler_file
                self.client = Client(**kwargs)
            else:
                self.client = Client(self.address, **kwargs)
        return self.client

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.client is not None:
            self.client.close()
        if self._cluster is not None:
            self._cluster.close()
        self.client = self._cluster = None


def _scheduler_file_address(path: str) -> str:
    """The scheduler address a ``--scheduler-file`` holds; clear errors otherwise."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"scheduler_file: no such file: {path!r}")
    try:
        with open(path) as fh:
            info = json.load(fh)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(
            f"scheduler_file: {path!r} is not the JSON a Dask scheduler writes ({e})"
        ) from None
    address = info.get("address") if isinstance(info, dict) else None
    if not isinstance(address, str) or "://" not in address:
        raise ValueError(f"scheduler_file: {path!r} holds no scheduler 'address'")
    return address


def _check_memory_limit(limit: str | int) -> None:
    from dask.utils import parse_bytes

    try:
        nbytes = limit if isinstance(limit, int) and not isinstance(limit, bool) else None
        if nbytes is None:
            if not isinstance(limit, str):
                raise ValueError
            nbytes = parse_bytes(limit) if limit.strip().lower() != "auto" else MIN_MEMORY_LIMIT
    except (ValueError, TypeError):
        raise ValueError(
            f"memory_limit must be a size such as '4GB' or 'auto', got {limit!r}"
        ) from None
    if nbytes < MIN_MEMORY_LIMIT:
        raise ValueError(
            f"memory_limit must be at least 256MiB per worker (a worker needs that much to "
            f"start), got {limit!r}"
        )


def _check_worker_count(n_workers: int) -> None:
    """Refuse more embedded workers than the machine's memory can start."""
    from distributed.system import MEMORY_LIMIT

    most = max(1, int(MEMORY_LIMIT // MIN_MEMORY_LIMIT))
    if n_workers > most:
        raise ValueError(
            f"n_workers={n_workers} would leave each worker less than 256MiB of this machine's "
            f"{MEMORY_LIMIT / 2**30:.0f} GiB; use at most {most} (--workers)"
        )


def _probe(address: str, security: Any, timeout: float) -> None:
    """Reach the scheduler at ``address`` and hear it answer within ``timeout`` seconds.

    distributed's ``Client`` waits forever on a port that accepts a connection
    but never answers (its ``timeout`` does not cover the handshake); this
    probe gives a one-line error instead. It runs in its own thread, so it
    works when the caller already runs an event loop (a notebook).
    """
    from distributed import Security
    from distributed.comm import connect

    _refused_at_once(address)
    args = (security or Security()).get_connection_args("client")  # dask's TLS config by default

    async def ask() -> Any:
        comm = await connect(address, timeout=timeout, **args)
        try:
            await comm.write({"op": "identity", "reply": True})
            return await comm.read()
        finally:
            await comm.close()

    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            asyncio.run(asyncio.wait_for(ask(), timeout))
            outcome.append(None)
        except BaseException as e:  # reported in the caller's thread
            outcome.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout + 5)
    error = outcome[0] if outcome else TimeoutError()
    if isinstance(error, asyncio.TimeoutError | TimeoutError):
        raise TimeoutError(
            f"scheduler: no answer from {address} within {timeout:.0f} s; is a Dask scheduler "
            "listening there?"
        )
    if error is not None:
        raise OSError(f"scheduler: cannot reach {address} ({error})") from None


def _refused_at_once(address: str, grace: float = REFUSED_GRACE) -> None:
    """Fail within ``grace`` seconds when nothing listens at a ``tcp://``/``tls://`` address.

    distributed's ``connect`` retries a refused connection until its whole
    timeout (30 s) has passed; a refusal is an answer, so it is reported at
    once (retried for ``grace`` seconds, for a scheduler that is starting).
    A port that accepts and then stays silent passes here and gets the
    probe's full deadline; other protocols go straight to the probe.

    Raises
    ------
    OSError
        The connection is refused (or the host is unknown) for ``grace`` seconds.

    Examples
    --------
    >>> _refused_at_once("tcp://127.0.0.1:1", grace=0.0)
    Traceback (most recent call last):
    ...
    OSError: scheduler: cannot reach tcp://127.0.0.1:1 (connection refused: is a Dask scheduler running there?)
    """
    import socket
    import time

    from distributed.comm.addressing import parse_address, parse_host_port

    try:
        scheme, loc = parse_address(address)
        host, port = parse_host_port(loc)
    except (ValueError, TypeError):
        return  # distributed reports a malformed address itself
    if scheme not in ("tcp", "tls"):
        return
    deadline = time.monotonic() + grace
    while True:
        try:
            with socket.create_connection((host, port), timeout=max(grace, 1.0)):
                return  # it accepts: the probe asks it for an answer
        except ConnectionRefusedError:
            why = "connection refused: is a Dask scheduler running there?"
        except socket.gaierror as e:
            why = f"unknown host {host!r}: {e.strerror}"
        except OSError:
            return  # unreachable or filtered: the probe waits for its deadline
        if time.monotonic() >= deadline:
            raise OSError(f"scheduler: cannot reach {address} ({why})")
        time.sleep(0.2)
