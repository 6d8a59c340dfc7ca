"""Two storage backends behind one small interface: Zarr v3 (directory) and HDF5 (file).

Arrays are addressed by slash paths ("audio/pooled") and written in whole row ranges; the
writer decides row ranges so that one block of clips owns whole chunks.
"""

from __future__ import annotations

import json
import sys
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import numpy as np

Mode = Literal["r", "a", "w"]
SUFFIXES = {".zarr": "zarr", ".h5": "hdf5", ".hdf5": "hdf5"}
READ_THREADS = 4  # threads reading one large raw array. Measured on 2 cores, 390 MiB: warm 0.08 s (1 thread: 0.1-0.39 s,
# its page faults and copies on one core), cold 0.32-0.35 s (1 thread: 0.4-0.55 s; the disk serves requests in parallel)
READ_PIECE_BYTES = 4 << 20  # one read request of those threads at most
PARALLEL_READ_BYTES = 16 << 20  # smaller reads are done by the calling thread alone


class StoreError(Exception):
    """A store that cannot be used as asked: missing, foreign, broken or of another version."""


def backend_kind(path: Path) -> str:
    kind = SUFFIXES.get(Path(path).suffix.lower())
    if kind is None:
        raise StoreError(f"store path {path} must end in .zarr (Zarr v3) or .h5 / .hdf5 (HDF5)")
    return kind


def open_backend(path: Path, mode: Mode) -> Backend:
    """Open a store by its suffix; mode r (must exist), a (create or append), w (create new)."""
    path = Path(path)
    kind = backend_kind(path)
    if mode == "r" and not path.exists():
        raise StoreError(f"store {path} does not exist")
    return ZarrBackend(path, mode) if kind == "zarr" else H5Backend(path, mode)


class Backend(ABC):
    kind: str

    @abstractmethod
    def create(self, name: str, shape: tuple[int, ...], dtype: Any, chunk_rows: int, compress: bool = True) -> None:
        """Create an array whose chunks span `chunk_rows` rows and all other dimensions; `compress`
        False stores them raw (for float32 features, which barely compress but cost time to decode)."""

    @abstractmethod
    def write(self, name: str, start: int, data: np.ndarray) -> None:
        """Write rows start:start+len(data)."""

    def flush(self) -> None:
        """Make what was written reach the disk (Zarr writes each chunk file at once)."""

    @abstractmethod
    def read(self, name: str, rows: slice | np.ndarray | None = None) -> np.ndarray: ...

    @abstractmethod
    def exists(self, name: str) -> bool: ...

    @abstractmethod
    def shape(self, name: str) -> tuple[int, ...]: ...

    @abstractmethod
    def get_attr(self, key: str) -> Any: ...

    @abstractmethod
    def set_attr(self, key: str, value: Any) -> None: ...

    @abstractmethod
    def del_attr(self, key: str) -> None: ...

    def close(self) -> None:
        return None

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _is_str(dtype: Any) -> bool:
    return dtype is str or np.dtype(dtype).kind in "UT"


class ZarrBackend(Backend):
    kind = "zarr"

    def __init__(self, path: Path, mode: Mode) -> None:
        import zarr

        try:
            self._group = zarr.open_group(str(path), mode="w-" if mode == "w" else mode)
        except Exception as err:  # zarr raises several types for a foreign or broken directory
            raise StoreError(f"{path} is not a readable Zarr v3 store ({type(err).__name__}: {err})") from err
        if self._group.metadata.zarr_format != 3:
            raise StoreError(f"{path} is a Zarr v{self._group.metadata.zarr_format} store; avsuperb writes v3")

    def create(self, name: str, shape: tuple[int, ...], dtype: Any, chunk_rows: int, compress: bool = True) -> None:
        chunks = (max(1, min(chunk_rows, shape[0] or 1)), *shape[1:])
        if _is_str(dtype):
            self._group.create_array(name, shape=shape, dtype=str, chunks=chunks)
        else:
            raw: dict[str, Any] = {} if compress else {"compressors": None}
            self._group.create_array(name, shape=shape, dtype=dtype, chunks=chunks, fill_value=0, **raw)

    def write(self, name: str, start: int, data: np.ndarray) -> None:
        self._group[name][start : start + len(data)] = data

    def read(self, name: str, rows: slice | np.ndarray | None = None) -> np.ndarray:
        arr = self._group[name]
        if rows is None or isinstance(rows, slice) and rows.step in (None, 1):
            start, stop, _ = (rows or slice(None)).indices(arr.shape[0]) if arr.ndim else (0, 0, 1)
            raw = _read_raw(arr, start, stop)
            if raw is not None:
                return raw
        if rows is None:
            return np.asarray(arr[...])
        if isinstance(rows, slice):
            return np.asarray(arr[rows])
        return np.asarray(arr.oindex[np.asarray(rows)])

    def exists(self, name: str) -> bool:
        return name in self._group

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._group[name].shape)

    def get_attr(self, key: str) -> Any:
        return self._group.attrs.get(key)

    def set_attr(self, key: str, value: Any) -> None:
        self._group.attrs[key] = value

    def del_attr(self, key: str) -> None:
        if key in self._group.attrs:
            del self._group.attrs[key]


def _read_raw(arr: Any, start: int, stop: int) -> np.ndarray | None:
    """Rows start:stop of an uncompressed little-endian array in a local store, read from its chunk
    files straight into the result (zarr's own path copies each chunk twice: a third of the speed
    for whole pooled arrays); None where that does not apply, and zarr reads it instead.

    A large read is split into pieces read by READ_THREADS threads at once: page faults and copies
    then use more than one core, and a cold disk gets more than one request at a time."""
    from zarr.codecs import BytesCodec
    from zarr.storage import LocalStore

    meta = arr.metadata
    codecs = getattr(meta, "codecs", ())
    if (not isinstance(arr.store, LocalStore) or sys.byteorder != "little" or arr.ndim == 0 or len(codecs) != 1
            or not isinstance(codecs[0], BytesCodec) or (codecs[0].endian is not None and codecs[0].endian.value != "little")
            or tuple(arr.chunks[1:]) != tuple(arr.shape[1:]) or arr.dtype.kind not in "biuf"):
        return None
    out = np.empty((max(stop - start, 0), *arr.shape[1:]), arr.dtype)
    row_bytes = out[:1].nbytes if len(out) else 0
    flat = out.reshape(-1).view(np.uint8)
    rows_per_chunk = arr.chunks[0]
    base = Path(arr.store.root) / arr.store_path.path
    pieces = []  # (chunk file, offset in it, destination): at most READ_PIECE_BYTES each
    for chunk in range(start // rows_per_chunk, -(-stop // rows_per_chunk) if stop > start else 0):
        lo, hi = max(start, chunk * rows_per_chunk), min(stop, (chunk + 1) * rows_per_chunk)
        key = meta.chunk_key_encoding.encode_chunk_key((chunk,) + (0,) * (arr.ndim - 1))
        step = max(1, READ_PIECE_BYTES // max(row_bytes, 1))
        for a in range(lo, hi, step):
            b = min(hi, a + step)
            pieces.append((base / key, (a - chunk * rows_per_chunk) * row_bytes, flat[(a - start) * row_bytes : (b - start) * row_bytes]))

    def read(piece: tuple[Path, int, np.ndarray]) -> int | None:
        """Bytes read into the piece's destination, or None when its chunk file is missing."""
        file, offset, dest = piece
        try:
            with open(file, "rb", buffering=0) as f:
                f.seek(offset)
                view, got = memoryview(dest), 0
                while got < len(view) and (n := f.readinto(view[got:])):  # a read may return less than asked
                    got += n
                return got
        except FileNotFoundError:  # a chunk never written holds the fill value
            return None

    if len(pieces) > 1 and flat.nbytes >= PARALLEL_READ_BYTES:
        with ThreadPoolExecutor(READ_THREADS, thread_name_prefix="store-read") as pool:
            got = list(pool.map(read, pieces))
    else:
        got = [read(p) for p in pieces]
    for (_, _, dest), n in zip(pieces, got):
        if n is None:
            dest.view(arr.dtype)[...] = meta.fill_value
        elif n != len(dest):
            return None  # a chunk shorter than its rows: let zarr decide what it is
    return out


class H5Backend(Backend):
    """HDF5 keeps one writer at a time; attributes hold JSON text."""

    kind = "hdf5"

    def __init__(self, path: Path, mode: Mode) -> None:
        import h5py

        self._h5py = h5py
        try:
            self._file = h5py.File(path, {"r": "r", "a": "a", "w": "w-"}[mode])
        except OSError as err:
            raise StoreError(f"{path} is not a readable HDF5 store ({err})") from err

    def create(self, name: str, shape: tuple[int, ...], dtype: Any, chunk_rows: int, compress: bool = True) -> None:
        # HDF5 arrays are stored uncompressed either way
        chunks = (max(1, min(chunk_rows, shape[0] or 1)), *shape[1:]) if shape[0] else None
        if _is_str(dtype):
            self._file.create_dataset(name, shape=shape, dtype=self._h5py.string_dtype(), chunks=chunks)
        else:
            self._file.create_dataset(name, shape=shape, dtype=dtype, chunks=chunks, fillvalue=0)

    def flush(self) -> None:
        self._file.flush()

    def write(self, name: str, start: int, data: np.ndarray) -> None:
        ds = self._file[name]
        if ds.dtype.kind == "O":
            data = np.asarray(data, dtype=object)
        ds[start : start + len(data)] = data

    def read(self, name: str, rows: slice | np.ndarray | None = None) -> np.ndarray:
        ds = self._file[name]
        if ds.dtype.kind == "O":
            ds = ds.asstr()
        if rows is None:
            return np.asarray(ds[()] if ds.shape == () else ds[...])
        if isinstance(rows, slice):
            return np.asarray(ds[rows])
        rows = np.asarray(rows)
        if len(rows) == 0:
            return np.asarray(ds[0:0])
        order = np.argsort(rows)  # h5py needs increasing indices
        out = np.asarray(ds[rows[order]])
        return out[np.argsort(order)]

    def exists(self, name: str) -> bool:
        return name in self._file

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._file[name].shape)

    def get_attr(self, key: str) -> Any:
        value = self._file.attrs.get(key)
        return None if value is None else json.loads(value)

    def set_attr(self, key: str, value: Any) -> None:
        self._file.attrs[key] = json.dumps(value)

    def del_attr(self, key: str) -> None:
        if key in self._file.attrs:
            del self._file.attrs[key]

    def close(self) -> None:
        if self._file.id.valid:
            self._file.flush()
            self._file.close()
