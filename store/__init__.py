"""The feature store: one Zarr v3 group or one HDF5 file, with the layout named in schemas/."""

from avsuperb.store.backend import Backend, StoreError, backend_kind, open_backend

__all__ = ["Backend", "StoreError", "backend_kind", "open_backend"]
