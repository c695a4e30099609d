"""Backbone embeddings of every photo view, computed once and cached on disk.

The frozen backbone runs through ONNX Runtime (about ten times faster than eager
torch on a CPU). Each cache file holds one view of every photo seen so far, keyed
by the photo's SHA-256, so a re-run only embeds what is new.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from penguin_api.training import views

log = logging.getLogger(__name__)

BATCH = 32
#: 1280 backbone features + the ImageNet king-penguin log-probability.
FEATURE_WIDTH = 1281


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/penguin-api`` (or ``~/.cache/penguin-api``), outside the repo."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "penguin-api"


def photo_id(path: Path) -> str:
    """Content hash of a photo: the cache key, stable across renames."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


class EmbeddingCache:
    """Embeddings [1280 features + king-penguin log-prob] per (view, photo) of one
    backbone at one input size."""

    def __init__(
        self, cache_dir: Path, threads: int = 2, backbone: str = "lite0", size: int = 224
    ) -> None:
        self.dir = cache_dir / "embeddings"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.threads = threads
        self.backbone = backbone
        self.size = size
        self._session = None
        self._store: dict[str, dict[str, np.ndarray]] = {}

    def get(self, paths: Sequence[Path], view_indices: Iterable[int], seed: int) -> np.ndarray:
        """Embeddings ``[len(views), len(paths), 1281]``, computing any that are missing.

        A photo the service could not decode either gets rows of NaN (and a warning);
        it is tried again on the next run, since the decoder may have learnt its format.
        """
        ids = [photo_id(p) for p in paths]
        keys = [views.view_key(v, seed, self.backbone, self.size) for v in view_indices]
        stores = {k: self._load(k) for k in keys}
        todo = [
            (p, pid)
            for p, pid in zip(paths, ids, strict=True)
            if any(_missing(stores[k], pid) for k in keys)
        ]
        if todo:
            log.info(
                "embedding %d photos x %d views (%s, %d px)",
                len(todo),
                len(keys),
                self.backbone,
                self.size,
            )
            self._compute(todo, list(view_indices), keys, seed, stores)
            self._save_all(keys, stores)
        return np.stack([np.stack([stores[k][pid] for pid in ids]) for k in keys])

    def _compute(self, todo, indices, keys, seed, stores) -> None:
        from penguin_api.imaging import ImageError

        batch: list[np.ndarray] = []
        slots: list[tuple[str, str]] = []
        for done, (path, pid) in enumerate(todo, 1):
            try:
                img = views.decode(path.read_bytes(), self.size)
            except ImageError as exc:
                log.warning("skipping %s: %s", path, exc)
                img = None
            for index, key in zip(indices, keys, strict=True):
                if img is None:
                    stores[key][pid] = np.full(FEATURE_WIDTH, np.nan, np.float32)
                    continue
                if _missing(stores[key], pid):
                    batch.append(views.make_view(img, index, seed, pid, self.size))
                    slots.append((key, pid))
            if batch and (len(batch) >= BATCH or done == len(todo)):
                out = self._embed(np.stack(batch))
                for (key, p), row in zip(slots, out, strict=True):
                    stores[key][p] = row
                batch, slots = [], []
            if done % 100 == 0:
                log.info("  %d/%d photos", done, len(todo))
                self._save_all(keys, stores)  # an interrupted run keeps what it did

    def _embed(self, images: np.ndarray) -> np.ndarray:
        if self._session is None:
            self._session = _embedder_session(self.backbone, self.size, self.threads)
        feats, king = self._session.run(None, {"image": images})
        return np.concatenate([feats, king[:, None]], axis=1).astype(np.float32)

    def _save_all(self, keys, stores) -> None:
        for k in keys:
            self._save(k, stores[k])

    def _path(self, key: str) -> Path:
        return self.dir / f"{key}.npz"

    def _load(self, key: str) -> dict[str, np.ndarray]:
        if key not in self._store:
            path = self._path(key)
            self._store[key] = dict(np.load(path)) if path.exists() else {}
        return self._store[key]

    def _save(self, key: str, store: dict[str, np.ndarray]) -> None:
        tmp = self._path(key).with_suffix(".tmp.npz")
        np.savez(tmp, **store)
        tmp.replace(self._path(key))


def _missing(store: dict[str, np.ndarray], pid: str) -> bool:
    """No usable embedding yet: never computed, or the photo could not be decoded then."""
    row = store.get(pid)
    return row is None or bool(np.isnan(row[0]))


def _embedder_session(backbone: str, size: int, threads: int):
    """Export the frozen backbone to a temporary ONNX file and open it."""
    import onnxruntime as ort
    import torch

    from penguin_api.training.backbone import Embedder, load_backbone

    net = Embedder(load_backbone(backbone)).eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "embedder.onnx"
        torch.onnx.export(
            net,
            (torch.zeros(1, size, size, 3, dtype=torch.uint8),),
            str(path),
            dynamo=False,
            input_names=["image"],
            output_names=["features", "king"],
            dynamic_axes={"image": {0: "n"}, "features": {0: "n"}, "king": {0: "n"}},
            opset_version=17,
        )
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
