"""A workaround for PySide6 6.12 on Python 3.11: None, True and False lose a reference on many calls.

PySide6 6.12's bindings return ``None``/``True``/``False`` from void methods, ``Signal.emit`` and
``processEvents`` without taking a new reference (harmless on Python ≥ 3.12, where these objects are
immortal). On 3.11 each call drops their refcount by one until the interpreter aborts with
"none_dealloc"/"bool_dealloc", after a few thousand streamed tokens. These three objects are never freed
anyway, so giving them an enormous refcount makes them effectively immortal, as on 3.12.
"""

from __future__ import annotations

import ctypes
import sys

_HEADROOM = 1 << 48  # ~2.8e14 lost references before anything could go wrong


def make_singletons_immortal() -> bool:
    """Raise the refcounts of None/True/False far out of reach; a no-op on Python ≥ 3.12."""
    if sys.version_info >= (3, 12) or hasattr(sys, "gettotalrefcount"):  # immortal already / debug build
        return False
    for obj in (None, True, False):
        refcount = ctypes.c_ssize_t.from_address(id(obj))  # ob_refcnt is PyObject's first field
        if refcount.value < _HEADROOM:
            refcount.value += _HEADROOM
    return True
