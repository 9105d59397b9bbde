"""Is the process that left a file behind (a job folder, a frame claim, a partial file) still
running? Standard library only.

A process id alone does not say: ids are reused, and a farm task requeued in a container often
gets the very id its killed run had. So a process is named by its id and its start time
(``process_start``), and ``process_alive`` answers False only when the process is provably gone:
no process has the id, or the one that has it started at another time.
"""

from __future__ import annotations

import os

_BOOT_ID = "/proc/sys/kernel/random/boot_id"


def _linux_start(pid: int) -> str:
    """"<boot id>:<start time in clock ticks since boot>" from /proc, or "" when unreadable."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            stat = handle.read()
        with open(_BOOT_ID, encoding="ascii") as handle:
            boot = handle.read().strip()
    except OSError:
        return ""
    # The command name (field 2) may hold spaces and parentheses: count fields after the last ")".
    fields = stat[stat.rfind(")") + 2:].split()
    return f"{boot}:{fields[19]}" if len(fields) > 19 else ""


def _windows_handle(pid: int):
    """(kernel32, handle) of a process, (kernel32, None) when no process has the id, or None
    when it cannot be told (the process exists but may not be opened, or ctypes failed)."""
    import ctypes
    from ctypes import wintypes
    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    kernel32.OpenProcess.restype = wintypes.HANDLE
    kernel32.OpenProcess.argtypes = (wintypes.DWORD, wintypes.BOOL, wintypes.DWORD)
    process_query_limited_information = 0x1000
    handle = kernel32.OpenProcess(process_query_limited_information, False, pid)
    if handle:
        return kernel32, handle
    error_invalid_parameter = 87  # what OpenProcess says for an id no process has
    return (kernel32, None) if ctypes.get_last_error() == error_invalid_parameter else None


def _windows_start(pid: int) -> str:
    import ctypes
    from ctypes import wintypes
    opened = _windows_handle(pid)
    if opened is None or opened[1] is None:
        return ""
    kernel32, handle = opened
    try:
        times = [wintypes.FILETIME() for _ in range(4)]  # creation, exit, kernel, user
        if not kernel32.GetProcessTimes(handle, *(ctypes.byref(t) for t in times)):
            return ""
        return str(times[0].dwHighDateTime << 32 | times[0].dwLowDateTime)
    finally:
        kernel32.CloseHandle(handle)


def process_start(pid: int | None = None) -> str:
    """When the process (default: this one) started, as an opaque token; "" where the system does
    not tell (macOS, or no access): then only the id is compared."""
    pid = os.getpid() if pid is None else pid
    try:
        if os.name == "nt":
            return _windows_start(pid)
        return _linux_start(pid) if os.path.isdir("/proc/self") else ""
    except (OSError, AttributeError, ValueError):
        return ""


def _exists(pid: int) -> bool | None:
    """Whether a process has this id; None when it cannot be told."""
    if os.name == "nt":
        # os.kill(pid, 0) would terminate the process on Windows: ask the kernel instead.
        import ctypes
        from ctypes import wintypes
        try:
            opened = _windows_handle(pid)
            if opened is None:
                return None
            kernel32, handle = opened
            if handle is None:
                return False
            try:
                code = wintypes.DWORD()
                still_active = 259
                if kernel32.GetExitCodeProcess(handle, ctypes.byref(code)):
                    return code.value == still_active
                return None
            finally:
                kernel32.CloseHandle(handle)
        except (OSError, AttributeError, ValueError):
            return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    except OSError:
        return None
    return True


def process_space() -> str:
    """This process's pid namespace ("" where there are none): two containers may share a host
    name (host networking) while their process ids mean different processes."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except (OSError, AttributeError):
        return ""


def process_alive(pid: int, start: str = "") -> bool:
    """False only when process ``pid`` is provably gone: no process has that id, or the one that
    has it is not the one that started at ``start`` (a token of ``process_start``). True while it
    runs, and whenever that cannot be told (the caller then falls back on a timeout)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    if pid == os.getpid():
        return not start or start == process_start()
    exists = _exists(pid)
    if exists is False:
        return False
    if start and exists:
        now = process_start(pid)
        if now and now != start:
            return False
    return True
