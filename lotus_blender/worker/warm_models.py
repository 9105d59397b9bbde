"""The models the worker keeps loaded between requests.

Depth & Normals alternates two models on every run. Both stay loaded when the device's free
memory holds the next one plus a prediction's working memory (see ``memory``); otherwise the
least recently used model is released first (swapping, as with a single slot). At most
MAX_WARM_MODELS stay loaded, so changing the model preference does not pile models up.
"""

from __future__ import annotations

import gc
import logging
from collections import OrderedDict

from . import memory

log = logging.getLogger("lotus.worker")

MAX_WARM_MODELS = 2  # the depth and the normal model


class WarmModels:
    """Loaded models by key (folder, device, dtype), least recently used first."""

    def __init__(self):
        self._models: OrderedDict = OrderedDict()
        self._sizes: dict = {}        # measured bytes of each key ever loaded

    def __len__(self) -> int:
        return len(self._models)

    @property
    def latest(self):
        """The most recently used model, or None."""
        return next(reversed(self._models.values())) if self._models else None

    def get(self, key):
        """The loaded model for key (now the most recently used), or None."""
        model = self._models.get(key)
        if model is not None:
            self._models.move_to_end(key)
        return model

    def names(self) -> list[str]:
        return [_label(key) for key in self._models]

    def loaded_bytes(self, device_type: str) -> int:
        return sum(self._sizes.get(key, 0) for key, model in self._models.items()
                   if model.device.type == device_type)

    def make_room(self, key, device, expected_bytes: int, working_bytes: int) -> list[str]:
        """Release models (least recently used first) until the model ``key`` of about
        ``expected_bytes`` and a prediction's ``working_bytes`` fit. Returns the released names."""
        need = self._sizes.get(key, expected_bytes) + working_bytes
        released = []
        while len(self._models) >= MAX_WARM_MODELS:
            released.append(self._release_oldest("at most %d models stay loaded" % MAX_WARM_MODELS))
        if not self._models:
            return released
        same_device = [k for k, m in self._models.items() if m.device.type == device.type]
        free = memory.free_bytes(device, self.loaded_bytes(device.type))
        if free is None:
            # Unknown free memory: swap, as a single slot would.
            while self._models:
                released.append(self._release_oldest("free memory unknown"))
            return released
        for old in same_device:
            if free >= need:
                break
            size = self._sizes.get(old, 0)
            released.append(self._release(old, f"{free / 2**20:.0f} MB free, "
                                               f"{need / 2**20:.0f} MB needed"))
            free += size
        if free >= need:
            log.info("keeping %s loaded: %.0f MB free, %.0f MB needed for %s", self.names(),
                     free / 2**20, need / 2**20, _label(key))
        return released

    def add(self, key, model) -> None:
        self._models[key] = model
        self._models.move_to_end(key)
        self._sizes[key] = memory.module_bytes(model.unet, model.vae)
        log.info("%s takes %.0f MB", _label(key), self._sizes[key] / 2**20)

    def release_others(self, keep) -> list[str]:
        """Release every model but ``keep`` (a LoadedModel), e.g. when a prediction runs out of memory."""
        return [self._release(key, "out of memory") for key, model in list(self._models.items())
                if model is not keep]

    def clear(self) -> bool:
        had = bool(self._models)
        self._models.clear()
        free_device_caches()
        return had

    def _release_oldest(self, why: str) -> str:
        return self._release(next(iter(self._models)), why)

    def _release(self, key, why: str) -> str:
        self._models.pop(key)
        free_device_caches()
        log.info("released %s (%s)", _label(key), why)
        return _label(key)


def free_device_caches() -> None:
    gc.collect()
    try:
        import torch
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        mps = getattr(torch, "mps", None)
        if mps is not None and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            mps.empty_cache()
    except ImportError:
        pass


def _label(key) -> str:
    folder, device, dtype = key
    return f"{folder.replace(chr(92), '/').rstrip('/').rsplit('/', 1)[-1]} ({device}, {dtype})"
