"""Output directories: what a command may write over, how it replaces a directory, who holds it.

The one place for these rules, used by `sepo sft`, `sepo sft-data`, `sepo run`, `sepo report`
and `sepo train`:

- `check_output_dir` refuses an `--out` that would destroy something the user did not ask to
  replace: a file, an input (or a directory inside or around one), or a non-empty directory
  that sepo did not write for this command. Every directory sepo writes carries a small
  marker, `.sepo-output.json`, naming the command, so its own earlier output is recognised.
- `replace_dir_atomically` swaps a finished staging directory into place (the old one is
  renamed aside first and put back if the swap fails); `staging_dir` and
  `write_dir_atomically` build the staging directory beside the output, on the same file
  system, and remove it whatever happens.
- `RunLock` holds an exclusive lock on a directory for the duration of a command, so a second
  process on the same output stops at once with the first one's pid and command.
- `describe_os_error` turns a full disk, a read-only or forbidden directory and the like into
  a one-line `SepoError` naming the path and what to do.
- `cleanup_on_failure` and `RunLock` remove what a failed command created and left empty.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import Literal

from sepo.errors import SepoError
from sepo.models.paths import cache_dir

#: Written into every output directory sepo creates: `{"made_by": "<command>"}`. Its content
#: is fixed (no time, no pid) so that the same command writes byte-identical directories.
OUTPUT_MARKER = ".sepo-output.json"
#: The lock file of `RunLock(directory, command)`, inside `directory`.
LOCK_FILE = ".sepo.lock"
#: The lock of a directory that is replaced whole (`RunLock.for_output`) lives beside it as
#: `.<name>.sepo.lock`: a lock file inside would be renamed away with the old directory.
LOCK_SUFFIX = ".sepo.lock"

OutputState = Literal["new", "empty", "earlier", "replace"]


class OutputDirError(SepoError):
    """An output directory that cannot be written (refused, or an OS error described)."""

    def __init__(self, message: str, *, errno_: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno_


@dataclass(frozen=True, slots=True)
class _Kind:
    """How a command treats its output directory."""

    label: str
    #: Whether re-running the command into its own earlier output continues it (run, train:
    #: resume; report: rebuild) rather than replacing it. A command that replaces (sft,
    #: sft-data) still needs --overwrite there: the earlier output may be a checkpoint or a
    #: dataset made with other arguments, and a re-run with a typo in them would silently
    #: destroy it.
    continues: bool
    #: Files that mark this command's output written before the marker existed.
    earlier_files: tuple[str, ...]
    #: Whether the command has an --overwrite option (the refusal says so when it does).
    overwrite_option: bool


_KINDS: dict[str, _Kind] = {
    "sft": _Kind("an SFT checkpoint directory", False, ("sepo_sft.json",), True),
    "sft-data": _Kind("an SFT dataset directory", False, ("card.json",), True),
    "run": _Kind("a `sepo run` directory", True, ("run_config.json",), True),
    "train": _Kind("a `sepo train` run directory", True, ("metrics.csv", "checkpoints"), False),
    "report": _Kind("a combined report directory", True, ("report.md",), False),
}


def _kind(command: str) -> _Kind:
    return _KINDS.get(command, _Kind(f"a `sepo {command}` output directory", False, (), True))


# ====================================================================== OS errors
_DISK_FULL_TEXT = ("no space left on device", "storagefull", "os error 28", "code: 28",
                   "errno 28", "disk quota exceeded")


def describe_os_error(err: OSError, path: str | Path | None = None) -> SepoError:
    """A one-line `SepoError` for an OS error met while writing `path`: the path, the cause and
    what to do. The file the OS named is added when it is not `path` itself."""
    named = err.filename
    subject = str(path) if path is not None else str(named) if named else "the output"
    if named is not None and path is not None and str(named) != str(path):
        subject += f" ({named})"
    code = err.errno
    if code == errno.ENOSPC:
        message = (f"no space left on the device of {subject}; free some disk space or choose "
                   "an --out on another disk, then run the command again")
    elif code == getattr(errno, "EDQUOT", -1):
        message = (f"disk quota exceeded writing {subject}; free some space or choose an --out "
                   "on another disk, then run the command again")
    elif code == errno.EROFS:
        message = f"{subject} is on a read-only file system; choose an --out on a writable disk"
    elif code in (errno.EACCES, errno.EPERM):
        message = (f"permission denied writing {subject}; choose an --out you can write to, or "
                   "change the directory's permissions")
    elif code == errno.ENAMETOOLONG:
        message = f"a file name is too long in {subject}; choose a shorter --out"
    elif code == errno.ENOTDIR:
        message = (f"{subject}: a part of the path is a file, not a directory; choose another "
                   "--out or move that file")
    elif code == errno.EEXIST:
        message = f"{subject} already exists; remove it or choose another --out"
    elif code == errno.EISDIR:
        message = f"{subject} is a directory where a file was expected; choose another --out"
    else:
        message = f"could not write {subject}: {err.strerror or err}"
    return OutputDirError(message, errno_=code)


def _existing_ancestor(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(".")


def _looks_like_disk_full(err: BaseException, path: Path) -> bool:
    """Whether an error that is not an `OSError` (torch's and safetensors' writers raise their
    own) was a full disk: its text says so, or it failed a write with no space left."""
    text = str(err).lower()
    if any(s in text for s in _DISK_FULL_TEXT):
        return True
    if "write" not in text:
        return False
    try:
        return shutil.disk_usage(_existing_ancestor(path)).free < 1 << 20
    except OSError:
        return False


@contextmanager
def describing_os_errors(path: str | Path) -> Iterator[None]:
    """Turn an OS error raised while writing `path` (and a full disk reported by torch or
    safetensors in their own words) into `describe_os_error`'s one-line `SepoError`."""
    try:
        yield
    except SepoError:
        raise
    except OSError as err:
        raise describe_os_error(err, path) from err
    except Exception as err:
        if _looks_like_disk_full(err, Path(path)):
            full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            raise describe_os_error(full, path) from err
        raise


# ====================================================================== checking an --out
def write_output_marker(directory: str | Path, made_by: str) -> Path:
    """Mark `directory` as written by `sepo <made_by>` (see `check_output_dir`)."""
    path = Path(directory) / OUTPUT_MARKER
    with describing_os_errors(directory):
        path.write_text(json.dumps({"made_by": made_by}) + "\n", encoding="utf-8")
    return path


def output_made_by(directory: str | Path) -> str | None:
    """The command that wrote `directory`: its marker's, else the command whose files it holds
    (outputs written before the marker existed), else None."""
    directory = Path(directory)
    marker = directory / OUTPUT_MARKER
    if marker.is_file():
        try:
            made_by = json.loads(marker.read_text(encoding="utf-8")).get("made_by")
        except (OSError, ValueError, AttributeError):
            made_by = None
        if isinstance(made_by, str):
            return made_by
    for command, kind in _KINDS.items():
        if any((directory / name).exists() for name in kind.earlier_files):
            return command
    return None


def model_input_paths(model: str | Path) -> list[Path]:
    """The paths a `--model` argument reads: a local path, or for the embedded names (tiny,
    smollm2-135m) the model cache that holds their builds (and, for tiny, the build shipped in
    the package). An HF id reads nothing local."""
    path = Path(model).expanduser()
    if path.exists():
        return [path]
    if str(model) in ("tiny", "smollm2-135m"):

        shipped = [Path(str(resources.files("sepo").joinpath("data", "tiny")))]
        return [cache_dir() / "models", *(shipped if model == "tiny" else [])]
    return []


def _resolved(path: Path) -> Path:
    return Path(os.path.abspath(path.expanduser())).resolve()


def _refuse_around_inputs(out: Path, inputs: Sequence[str | Path]) -> None:
    where = _resolved(out)
    for given in inputs:
        source = Path(given)
        if not source.expanduser().exists():
            continue
        inp = _resolved(source)
        if where == inp:
            raise OutputDirError(f"--out {out} is the input {given}: writing there would destroy "
                                 "it; choose another --out")
        if inp in where.parents:
            raise OutputDirError(f"--out {out} lies inside the input {given}; choose an --out "
                                 "outside it")
        if where in inp.parents:
            raise OutputDirError(f"--out {out} contains the input {given}: replacing it would "
                                 "destroy the input; choose another --out")


def _refuse_replacing_home(out: Path) -> None:
    """Never replace the root, the home directory or a directory around the working one."""
    where = _resolved(out)
    cwd = Path.cwd().resolve()
    if where == Path(where.anchor) or where == Path.home().resolve() or where == cwd \
            or where in cwd.parents:
        raise OutputDirError(f"refusing to replace {out}: it is the root, the home directory or "
                             "(around) the working directory; choose another --out")


def check_output_dir(out: str | Path, *, inputs: Sequence[str | Path] = (),
                     overwrite: bool = False, made_by: str) -> OutputState:
    """Check that `sepo <made_by>` may write the directory `out`; returns what is there.

    Refused (a one-line `SepoError` naming the path and how to proceed):

    - `out` is, lies inside, or contains one of `inputs` (paths that do not exist are skipped,
      so a model name or HF id can be passed as is) -- also with `overwrite`;
    - `out` is a file (or anything but a directory) -- also with `overwrite`: sepo writes a
      directory, and a file there is more likely a mistyped path than something to replace;
    - `out` is a non-empty directory that is not this command's earlier output, unless
      `overwrite` (and then never the root, home or working directory or one around it);
    - `out` is this command's earlier output and the command replaces its output (sft,
      sft-data), unless `overwrite`. Commands that continue their output (run, train, report)
      get "earlier" and decide themselves (resume, or compare configs).

    Returns "new" (nothing there), "empty", "earlier" (this command's output, to continue) or
    "replace" (to be replaced: `overwrite` was given). Writes nothing.
    """
    out = Path(out)
    kind = _kind(made_by)
    _refuse_around_inputs(out, inputs)
    if not out.exists() and not out.is_symlink():
        anchor = _existing_ancestor(out.parent)
        if not anchor.is_dir():
            raise OutputDirError(f"--out {out}: {anchor} is a file, not a directory; choose "
                                 "another --out")
        return "new"
    if not out.is_dir():
        raise OutputDirError(f"--out {out} is a file, not a directory; remove it or choose "
                             "another --out")
    try:
        entries = [p.name for p in out.iterdir() if p.name != LOCK_FILE]
    except OSError as err:
        raise describe_os_error(err, out) from err
    if not entries:
        return "empty"
    owner = output_made_by(out)
    how = (", or add --overwrite to replace it" if kind.overwrite_option else "")
    if owner == made_by:
        if kind.continues:
            return "earlier"
        if not overwrite:
            raise OutputDirError(f"{out} holds an earlier `sepo {made_by}` output; choose "
                                 f"another --out{how}")
    elif not overwrite:
        what = f"`sepo {owner}` output" if owner else "files sepo did not write"
        raise OutputDirError(f"{out} is not {kind.label}: it is not empty and holds {what}; "
                             f"choose another --out{how}")
    _refuse_replacing_home(out)
    return "replace"


def empty_directory(directory: str | Path, *, keep: Sequence[str] = (LOCK_FILE,)) -> None:
    """Delete everything in `directory` but the names in `keep` (its lock, by default)."""
    directory = Path(directory)
    with describing_os_errors(directory):
        for entry in directory.iterdir():
            if entry.name in keep:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()


# ====================================================================== atomic replacement
def _through_link(out: Path) -> Path:
    """An `out` that is a symbolic link stands for its target: the new directory replaces the
    target (on the target's disk) and the link stays."""
    return out.resolve() if out.is_symlink() else out


#: How the directories beside an output are named while it is replaced: `kind` "tmp" for the
#: staging directory, "old" for the previous output set aside; a unique part follows. A caller
#: may pass its own (the SEPO trainer's checkpoints: `.tmp-step-000010-<pid>`, the names its
#: `--resume` and older run directories know).
ASIDE_NAMES = ".{name}.{kind}-"


def _aside(out: Path, kind: str, names: str) -> str:
    return names.format(name=out.name, kind=kind)


def _clear_aside(out: Path, names: str) -> None:
    """Remove the staging and set-aside directories that crashed runs left beside `out`."""
    prefixes = (_aside(out, "tmp", names), _aside(out, "old", names))
    for leftover in out.parent.iterdir():
        if leftover.name.startswith(prefixes):
            shutil.rmtree(leftover, ignore_errors=True)


def make_staging_dir(out: str | Path, *, clear_stale: bool = False) -> Path:
    """A new hidden directory beside `out` (`.<name>.tmp-*`, same file system, so the final
    rename is atomic). `clear_stale` first removes the staging and set-aside directories that
    crashed runs left there; only a caller holding `out`'s lock may ask for it."""
    out = _through_link(Path(out))
    with describing_os_errors(out):
        out.parent.mkdir(parents=True, exist_ok=True)
        if clear_stale:
            _clear_aside(out, ASIDE_NAMES)
        return Path(tempfile.mkdtemp(prefix=_aside(out, "tmp", ASIDE_NAMES), dir=out.parent))


@contextmanager
def staging_dir(out: str | Path, *, clear_stale: bool = False) -> Iterator[Path]:
    """`make_staging_dir`, removed on leaving the block if it is still there (on success it has
    been renamed to `out` by `replace_dir_atomically`)."""
    staging = make_staging_dir(out, clear_stale=clear_stale)
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _fsync_tree(root: Path) -> None:
    """File contents and directory entries on disk before the rename makes them visible."""
    for path in root.rglob("*"):
        if path.is_symlink():
            continue
        if path.is_file():
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
        elif path.is_dir():
            _fsync_dir(path)
    _fsync_dir(root)


def _fsync_dir(directory: Path) -> None:
    """Make a directory's entries (a rename into it) durable. Some file systems refuse to sync
    a directory; a kill -9 needs no sync at all, only a power loss does."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


def _swap(staging: Path, out: Path, names: str, *, fsync: bool) -> Path | None:
    """Rename `out` aside and `staging` into its place (putting the old one back if that
    fails); returns the set-aside old one, for the caller to delete. `os.replace`, not
    `os.rename`: the same on POSIX, and the one call the checkpoint kill tests intercept."""
    old: Path | None = None
    if out.exists() or out.is_symlink():
        old = out.with_name(f"{_aside(out, 'old', names)}{os.getpid()}")
        if old.exists() or old.is_symlink():
            _remove(old)
        os.replace(out, old)
    try:
        os.replace(staging, out)
    except BaseException:
        if old is not None:
            os.replace(old, out)
        raise
    if fsync:
        _fsync_dir(out.parent)
    return old


def replace_dir_atomically(staging: str | Path, out: str | Path, *, fsync: bool = False) -> Path:
    """Move the finished directory `staging` to `out`, replacing what is there.

    The old `out` is renamed aside (`.<name>.old-<pid>`), `staging` renamed into place, then
    the old one deleted; if the second rename fails the old one is put back. A reader sees the
    old directory or the new one, never a mix. `staging` must be on `out`'s file system
    (`make_staging_dir`). `fsync` flushes the files first (checkpoints a crash must not lose).
    """
    staging, out = Path(staging), _through_link(Path(out))
    with describing_os_errors(out):
        if fsync:
            _fsync_tree(staging)
        old = _swap(staging, out, ASIDE_NAMES, fsync=fsync)
    if old is not None:
        _remove(old)
    return out


def write_text_atomically(path: str | Path, text: str, *, fsync: bool = False) -> None:
    """Replace a small file in one rename, so a reader (or a resume after a kill) sees the old
    or the new content, never half a file. `fsync` makes the content durable before the rename
    (checkpoint files); a failed write leaves no temporary file behind."""
    path = Path(path)
    tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}")
    try:
        with open(tmp, "w") as fh:
            fh.write(text)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_dir_atomically(out: str | Path, write: Callable[[Path], None], *,
                         names: str = ASIDE_NAMES, fsync: bool = True) -> Path:
    """Call `write(tmp)` to fill a staging directory beside `out`, then swap it into place as
    `replace_dir_atomically` does, its files flushed to disk first with `fsync`. What a killed
    earlier write left beside `out` is removed first, so only the holder of `out`'s lock may
    call it; the staging directory is then named `<names with kind "tmp"><pid>`. On failure
    the staging directory is removed and `out` is as it was. OS errors propagate as they are
    (the SEPO trainer's checkpoints; wrap the call in `describing_os_errors` for an --out)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    _clear_aside(out, names)
    tmp = out.with_name(f"{_aside(out, 'tmp', names)}{os.getpid()}")
    tmp.mkdir()
    try:
        write(tmp)
        if fsync:
            _fsync_tree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = _swap(tmp, out, names, fsync=fsync)
    if old is not None:
        _remove(old)
    return out


# ====================================================================== cleanup
def _missing_dirs(path: Path) -> list[Path]:
    """`path` and those of its ancestors that do not exist, nearest first."""
    missing = []
    for candidate in (path, *path.parents):
        if candidate.exists() or candidate.is_symlink():
            break
        missing.append(candidate)
    return missing


def _remove_empty(dirs: Sequence[Path]) -> None:
    """Remove the directories (nearest first) while they are empty."""
    for directory in dirs:
        try:
            directory.rmdir()
        except FileNotFoundError:
            continue
        except OSError:
            break


@contextmanager
def cleanup_on_failure(path: str | Path) -> Iterator[None]:
    """If the block fails, remove `path` when it did not exist on entry (all of it: only this
    command can have written it) and the parent directories it created, when empty. A
    directory that existed before is left as it is."""
    path = Path(path)
    missing = _missing_dirs(path)
    try:
        yield
    except BaseException:
        if missing:
            _remove(path)
            _remove_empty(missing[1:])
        raise


# ====================================================================== the lock
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


class RunLock:
    """An exclusive lock on `directory` for one command: `with RunLock(directory, "train"):`.

    The lock is `fcntl.flock` on `directory/.sepo.lock`, held for the whole block; the file
    holds the owner's pid, host, command and start time, so a second process is refused at
    once with a one-line `SepoError` naming them. The kernel releases a flock when its process
    dies, so a lock file left by a killed process is simply taken over. The holder deletes the
    file before releasing the lock; a process that locked the deleted file meanwhile notices
    (the path no longer names its file) and tries again.

    `directory` is created if missing; when the lock is released, the directories it created
    are removed again if they are empty (a command that failed before writing anything leaves
    nothing behind).

    flock locks one open file description: a second `RunLock` on the same directory in the
    same process is refused too. On file systems without flock (some network mounts), it
    falls back to the pid in the file: a live owner on this host is refused, a dead one's file
    is taken over. That fallback is not race-free (two processes starting in the same instant
    can both pass); an owner on another host cannot be checked and is always refused.
    """

    def __init__(self, directory: str | Path, command: str, *, name: str = LOCK_FILE,
                 target: str | Path | None = None) -> None:
        self.directory = Path(directory)
        self.command = command
        self.path = self.directory / name
        #: What the lock protects, for messages (the directory, or an output beside it).
        self.target = Path(target) if target is not None else self.directory
        self._fd: int | None = None
        self._created: list[Path] = []

    @classmethod
    def for_output(cls, out: str | Path, command: str) -> RunLock:
        """A lock for an output directory that is replaced whole (sft, sft-data): the lock file
        is `.<name>.sepo.lock` beside `out`, since a file inside would be renamed away with
        the old directory and a second process could then lock the new one."""
        out = Path(out)
        return cls(out.parent, command, name=f".{out.name}{LOCK_SUFFIX}", target=out)

    # ------------------------------------------------------------------ context manager
    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()

    def acquire(self) -> None:
        if self._fd is not None:
            raise SepoError(f"{self.path} is already held by this lock")
        missing = _missing_dirs(self.directory)
        with describing_os_errors(self.directory):
            self.directory.mkdir(parents=True, exist_ok=True)
        try:
            self._take()
        except BaseException:
            _remove_empty(missing)
            raise
        self._created = missing

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                # Delete while still holding the lock: a waiter that opened this file sees
                # the path gone after locking it and retries on a fresh one.
                if self._names_file(fd):
                    self.path.unlink(missing_ok=True)
            except OSError:
                pass
            finally:
                os.close(fd)
        created, self._created = self._created, []
        _remove_empty(created)

    # ------------------------------------------------------------------ internals
    def _names_file(self, fd: int) -> bool:
        try:
            on_disk, mine = os.stat(self.path), os.fstat(fd)
        except FileNotFoundError:
            return False
        return (on_disk.st_dev, on_disk.st_ino) == (mine.st_dev, mine.st_ino)

    def _take(self) -> None:
        try:
            import fcntl
        except ImportError:  # not a POSIX system
            fcntl = None  # type: ignore[assignment]
        for _ in range(100):
            with describing_os_errors(self.path):
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0),
                             0o644)
            try:
                if fcntl is None:
                    raise OSError(errno.ENOSYS, "no flock")
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = _read_owner(fd)
                os.close(fd)
                raise self._busy(owner) from None
            except OSError as err:
                if err.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL,
                                 getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)):
                    self._take_without_flock(fd)
                    return
                os.close(fd)
                raise describe_os_error(err, self.path) from err
            if not self._names_file(fd):  # the previous holder deleted it: try the new one
                os.close(fd)
                continue
            self._fd = fd
            self._write_owner()
            return
        raise SepoError(f"could not lock {self.path}: other processes keep replacing it")

    def _take_without_flock(self, fd: int) -> None:
        owner = _read_owner(fd)
        pid, host = owner.get("pid"), owner.get("host")
        if isinstance(pid, int) and pid != os.getpid() and (
                host != socket.gethostname() or _pid_alive(pid)):
            os.close(fd)
            raise self._busy(owner, stale_hint=host != socket.gethostname())
        self._fd = fd
        self._write_owner()

    def _write_owner(self) -> None:
        assert self._fd is not None
        record = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command,
                  "started": datetime.now(UTC).isoformat(timespec="seconds"),
                  "directory": str(self.target)}
        data = (json.dumps(record) + "\n").encode("utf-8")
        with describing_os_errors(self.path):
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, data, 0)

    def _busy(self, owner: dict[str, object], *, stale_hint: bool = False) -> SepoError:
        pid = owner.get("pid")
        if pid is None:
            who = "another sepo process (just starting; no pid written yet)"
        else:
            who = (f"`sepo {owner.get('command', '?')}` (pid {pid} on {owner.get('host', '?')}, "
                   f"since {owner.get('started', '?')})")
        hint = (f"; if that process is gone, delete {self.path}" if stale_hint else
                f"; wait for it to finish or stop it, then run the command again (lock: "
                f"{self.path})")
        return OutputDirError(f"{self.target} is in use by {who}{hint}")


def _read_owner(fd: int) -> dict[str, object]:
    try:
        data = os.pread(fd, 4096, 0)
        owner = json.loads(data.decode("utf-8"))
    except (OSError, ValueError):
        return {}
    return owner if isinstance(owner, dict) else {}


__all__ = [
    "ASIDE_NAMES",
    "LOCK_FILE",
    "OUTPUT_MARKER",
    "OutputDirError",
    "OutputState",
    "RunLock",
    "check_output_dir",
    "cleanup_on_failure",
    "describe_os_error",
    "describing_os_errors",
    "empty_directory",
    "make_staging_dir",
    "model_input_paths",
    "output_made_by",
    "replace_dir_atomically",
    "staging_dir",
    "write_dir_atomically",
    "write_output_marker",
]
