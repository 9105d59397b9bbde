"""Files of a batch that many machines may run at once: claims, partial files, finished frames.

- A frame is finished when all its final files exist. Files are written under a temporary name in
  the same folder (``.NAME.HOST.PID.lotus-partial.EXT``) and renamed into place when complete, so a
  killed run never leaves a partial file under a final name, and two machines writing the same
  frame only ever replace one complete file by another.
- Before computing a frame a run claims it: ``.NAME.lotus-claim`` created with O_EXCL (atomic on
  local and network file systems), holding the host, the process id and a token. Other runs skip
  claimed frames and come back to them. The owner touches its claims while it works; a claim is
  stale when its process is provably gone (same host and process namespace, and no process with
  that id and start time: a SIGKILLed run, requeued) or it has not been touched for
  ``stale_after`` seconds (another host, or a hung process), and is then taken over.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import time
import uuid

from .processes import process_alive, process_space, process_start

CLAIM_SUFFIX = ".lotus-claim"
PARTIAL_MARK = ".lotus-partial"
HEARTBEAT_S = 15.0
DEFAULT_STALE_AFTER_S = 300.0

HOST = socket.gethostname()
# Who this process is, written into each claim: with the host, enough to prove it gone later.
_OWNER = {"host": HOST, "pid_space": process_space(), "pid": os.getpid(), "start": process_start()}
_PARTIAL = re.compile(r"^\.(?P<name>.+)\.(?P<host>[^.]+)\.(?P<pid>\d+)" + re.escape(PARTIAL_MARK))


def _host_label() -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", HOST) or "host"


def partial_path(final: str) -> str:
    """Where ``final`` is written before it is renamed into place (same folder, same extension,
    so Blender's writers see the format they expect)."""
    folder, filename = os.path.split(final)
    extension = os.path.splitext(filename)[1]
    return os.path.join(folder, f".{filename}.{_host_label()}.{os.getpid()}{PARTIAL_MARK}{extension}")


def commit(partials: dict, finals: dict, main_key: str) -> None:
    """Rename each partial file onto its final name, the main file last (its presence is what
    makes the frame count as finished, together with the others)."""
    for key in sorted(finals, key=lambda k: k == main_key):
        os.replace(partials[key], finals[key])


def finished(finals: dict) -> bool:
    return all(os.path.isfile(path) and os.path.getsize(path) > 0 for path in finals.values())


def _read_claim(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return {}


def claim_is_stale(path: str, stale_after: float = DEFAULT_STALE_AFTER_S) -> bool:
    try:
        age = time.time() - os.stat(path).st_mtime
    except FileNotFoundError:
        return True
    if age > stale_after:
        return True
    return owner_gone(_read_claim(path))


def owner_gone(owner: dict) -> bool:
    """The claim's process is provably gone: it ran here (same host, same process namespace) and
    no process with its id and start time runs now."""
    space = owner.get("pid_space")
    if owner.get("host") != HOST or (space and space != _OWNER["pid_space"]):
        return False
    pid = owner.get("pid")
    return isinstance(pid, int) and not process_alive(pid, str(owner.get("start") or ""))


def describe_claim(path: str) -> str:
    """"host b, process 4242, touched 12 s ago" for the line a waiting run prints."""
    owner = _read_claim(path)
    try:
        age = f", touched {time.time() - os.stat(path).st_mtime:.0f} s ago"
    except OSError:
        age = ""
    return f"host {owner.get('host', '?')}, process {owner.get('pid', '?')}{age}"


class _StopSignal:
    """A stop signal (SIGTERM) that arrived while claims were being written or removed."""
    deferring = 0
    pending = False


def stop_requested(signum, _frame) -> None:
    """The batch's SIGTERM handler: stop now (KeyboardInterrupt), or right after the claim
    bookkeeping in progress. Python runs signal handlers in the main thread between bytecodes,
    so this, unlike blocking the signal (another thread would take it), covers every thread."""
    if _StopSignal.deferring:
        _StopSignal.pending = True
        return
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def _termination_deferred():
    """Claims are written, recorded and removed whole: a stop signal waits for the block."""
    _StopSignal.deferring += 1
    try:
        yield
    finally:
        _StopSignal.deferring -= 1
    if not _StopSignal.deferring and _StopSignal.pending:
        _StopSignal.pending = False
        raise KeyboardInterrupt("stop signal")


def _remove_claim(path: str, token: str) -> None:
    """Remove the claim file if it is still ours (not taken over as stale by another run)."""
    if _read_claim(path).get("token") == token:
        try:
            os.remove(path)
        except FileNotFoundError:
            pass


class Claims:
    """The claims this process holds."""

    def __init__(self, stale_after: float = DEFAULT_STALE_AFTER_S):
        self.stale_after = stale_after
        self.held: dict[str, str] = {}          # claim path -> our token
        self._last_heartbeat = time.monotonic()

    @staticmethod
    def path_for(final: str) -> str:
        folder, filename = os.path.split(final)
        return os.path.join(folder, f".{filename}{CLAIM_SUFFIX}")

    def _create(self, path: str) -> bool:
        token = uuid.uuid4().hex
        # A farm's SIGTERM waits until the claim is written and recorded, so that release_all
        # never misses one (it arrived between creating the file and recording it, once).
        with _termination_deferred():
            try:
                descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                json.dump(dict(_OWNER, pid=os.getpid(), token=token,
                               since=time.strftime("%Y-%m-%d %H:%M:%S")), handle)
            self.held[path] = token
        return True

    def acquire(self, final: str) -> bool:
        """Claim the frame whose main file is ``final``; False when another live run has it."""
        path = self.path_for(final)
        if self._create(path):
            return True
        if not claim_is_stale(path, self.stale_after):
            return False
        stale_token = _read_claim(path).get("token")
        # Move the stale claim aside under a name of our own: of several runs doing this at once
        # only one rename succeeds.
        grave = f"{path}.{_host_label()}.{os.getpid()}.stale"
        try:
            os.rename(path, grave)
        except OSError:
            return False
        if _read_claim(grave).get("token") != stale_token:
            # A run took it over between our look and our rename: give its claim back.
            try:
                os.link(grave, path)
            except OSError:
                pass
            os.remove(grave)
            return False
        os.remove(grave)
        return self._create(path)

    def discard_stale(self, final: str) -> None:
        """Tidy up: a stale claim on a frame that is finished anyway."""
        path = self.path_for(final)
        if path not in self.held and os.path.exists(path) and claim_is_stale(path, self.stale_after):
            try:
                os.remove(path)
            except OSError:
                pass

    def release(self, final: str) -> None:
        # Forgotten only once its file is gone: a stop in between leaves it to release_all.
        path = self.path_for(final)
        token = self.held.get(path)
        if token is None:
            return
        with _termination_deferred():
            _remove_claim(path, token)
            del self.held[path]

    def release_all(self) -> None:
        with _termination_deferred():
            for path, token in list(self.held.items()):
                _remove_claim(path, token)
                del self.held[path]

    def heartbeat(self, force: bool = False) -> None:
        """Touch our claims (at most every HEARTBEAT_S) so other hosts see we are alive."""
        now = time.monotonic()
        if not force and now - self._last_heartbeat < HEARTBEAT_S:
            return
        self._last_heartbeat = now
        for path in self.held:
            try:
                os.utime(path)
            except OSError:
                pass


def remove_stale_partials(folder: str, stale_after: float = DEFAULT_STALE_AFTER_S) -> list[str]:
    """Partial files left by killed runs (dead process on this host, or old) are removed."""
    removed = []
    try:
        entries = os.listdir(folder)
    except OSError:
        return removed
    for entry in entries:
        match = _PARTIAL.match(entry)
        if match is None:
            continue
        path = os.path.join(folder, entry)
        try:
            age = time.time() - os.stat(path).st_mtime
        except OSError:
            continue
        same_host = match.group("host") == _host_label()
        if (same_host and not process_alive(int(match.group("pid")))) or age > stale_after:
            try:
                os.remove(path)
                removed.append(path)
            except OSError:
                pass
    return removed
