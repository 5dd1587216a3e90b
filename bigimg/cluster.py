"""Where the work runs: an embedded LocalCluster or any existing Dask cluster."""

from __future__ import annotations

import os
from types import TracebackType
from typing import Any


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
    ) -> None:
        if address is not None and scheduler_file is not None:
            raise ValueError("pass either address or scheduler_file, not both")
        if scheduler_file is not None and not os.path.exists(scheduler_file):
            raise FileNotFoundError(f"scheduler_file: no such file: {scheduler_file!r}")
        if n_workers is not None and (not isinstance(n_workers, int) or n_workers < 1):
            raise ValueError(f"n_workers must be a positive int, got {n_workers!r}")
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
