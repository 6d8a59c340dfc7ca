"""Sharded extraction as tasks on a Dask distributed cluster: one task per shard (`--shard K/N`
semantics, see store/writer.py), on an existing scheduler or on a local cluster of worker
processes started for the run. Every worker must be able to import avsuperb and read the
dataset and the store's folder (a shared filesystem for a remote cluster)."""

from __future__ import annotations

import logging
import socket
import time
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from tqdm import tqdm

from avsuperb import schemas as S
from avsuperb.extract.run import ExtractError, ExtractOptions, Summary, run_extraction
from avsuperb.store.backend import StoreError, backend_kind, open_backend

log = logging.getLogger(__name__)

POLL_S = 1.0  # how often the client reads the store's progress


def _check_reachable(scheduler: str) -> None:
    """A tcp:// scheduler that refuses connections is an error at once (the client would retry for
    its whole timeout); other address forms are left to the client."""
    url = urlsplit(scheduler if "://" in scheduler else f"tcp://{scheduler}")
    if url.scheme != "tcp" or not url.hostname or url.port is None:
        return
    try:
        socket.create_connection((url.hostname, url.port), timeout=5).close()
    except OSError as err:
        raise ExtractError(f"cannot reach the Dask scheduler at {scheduler}: {err.strerror or err}") from None


def run_on_cluster(opts: ExtractOptions, scheduler: str | None = None, workers: int | None = None,
                   shards: int | None = None) -> list[Summary]:
    """Extract `opts` as `shards` tasks on the Dask scheduler at `scheduler`, or on a local
    cluster of `workers` processes (one thread each). Shards default to the cluster's worker
    count. Returns each shard's summary, in shard order; a failed shard's error is raised."""
    try:
        from distributed import Client, LocalCluster
    except ImportError as err:  # a dependency, but say what is missing if it was left out
        raise ExtractError(f"running on a Dask cluster needs the distributed package ({err}); pip install distributed") from None

    if backend_kind(opts.out) != "zarr":
        raise StoreError(f"{opts.out}: an HDF5 store takes a single writer; extract on a cluster into a .zarr store")
    cluster: Any = None
    try:
        if scheduler:
            _check_reachable(scheduler)
            try:
                client = Client(scheduler, timeout="20s")
            except (OSError, TimeoutError) as err:
                raise ExtractError(f"cannot reach the Dask scheduler at {scheduler}: {err}") from None
        else:
            cluster = LocalCluster(n_workers=workers or 2, threads_per_worker=1, processes=True, dashboard_address=None)
            client = Client(cluster)
        with client:
            n = shards or max(1, len(client.scheduler_info(n_workers=-1)["workers"]))
            log.info("extracting %s in %d shards on %s", opts.out, n, scheduler or f"a local cluster of {workers or 2} processes")
            futures = [
                client.submit(run_extraction, replace(opts, shard=(k, n), progress=False), key=f"avsuperb-shard-{k + 1}-of-{n}", pure=False)
                for k in range(n)
            ]
            _follow(futures, opts)
            return list(client.gather(futures))
    finally:
        if cluster is not None:
            cluster.close()


def _follow(futures: list[Any], opts: ExtractOptions) -> None:
    """A progress bar of the store's done clips until every shard task has ended."""
    with tqdm(desc=f"extract {opts.model} ({len(futures)} shards)", unit="clip", disable=not opts.progress) as bar:
        while not all(f.done() for f in futures):
            time.sleep(POLL_S)
            status = _status(opts)
            if status is not None:
                bar.total = len(status)
                bar.n = int(np.sum(status != S.STATUS_PENDING))
                bar.refresh()


def _status(opts: ExtractOptions) -> np.ndarray | None:
    if not opts.out.exists():
        return None
    try:
        backend = open_backend(opts.out, "r")
    except Exception:  # noqa: BLE001 - caught while a shard creates it
        return None
    try:
        return np.asarray(backend.read(S.CLIP_STATUS))
    except Exception:  # noqa: BLE001
        return None
    finally:
        backend.close()
