"""The one handle on the C library, for the few system calls the standard library lacks.

Rules:
- ``libc()`` loads ``ctypes.CDLL(None, use_errno=True)`` once per process, on first use: importing this module
  loads nothing (``delete`` only needs libc when something is still mounted).
- Prototypes are set once, here, for every function that takes pointers (mount, umount2, setns, prctl).
- ``check(result, what)`` turns a -1 into OSError with errno and ``what``; callers never read errno themselves.
- Standard library only.
"""

from __future__ import annotations

import os

__all__ = ["check", "libc", "prctl"]

_libc = None


def libc():
    """The C library with errno capture and the prototypes this package uses."""
    global _libc
    if _libc is None:
        import ctypes

        lib = ctypes.CDLL(None, use_errno=True)
        c_char_p, c_int, c_ulong = ctypes.c_char_p, ctypes.c_int, ctypes.c_ulong
        lib.mount.argtypes = (c_char_p, c_char_p, c_char_p, c_ulong, c_char_p)
        lib.mount.restype = c_int
        lib.umount2.argtypes = (c_char_p, c_int)
        lib.umount2.restype = c_int
        lib.setns.argtypes = (c_int, c_int)
        lib.setns.restype = c_int
        lib.prctl.restype = c_int
        _libc = lib
    return _libc


def errno_now() -> int:
    import ctypes

    return ctypes.get_errno()


def check(result: int, what: str) -> int:
    """``result`` unless it is -1 (the C convention for failure): then OSError(errno, what: strerror)."""
    if result == -1:
        err = errno_now()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0, *, what: str = "prctl") -> int:
    """prctl(2) with integer arguments; raises OSError on failure."""
    import ctypes

    args = [ctypes.c_ulong(a) for a in (arg2, arg3, arg4, arg5)]
    return check(libc().prctl(ctypes.c_int(option), *args), what)
