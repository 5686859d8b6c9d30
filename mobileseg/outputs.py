"""Where mobileseg writes, and the promises it keeps there.

* **Nothing half-written.** A file is written beside its destination and renamed into place; a folder is
  built in a staging folder beside it and renamed into place. Both get the modes the user's umask gives.
* **Nothing deleted or replaced that mobileseg did not write.** An existing file is replaced only when it
  carries mobileseg's mark (`written_by_mobileseg`), an existing folder only when it is empty or a folder
  of ours: a ``manifest.json`` with a ``mobileseg.…`` schema that lists every file in it.
* **One writer per folder.** A writer holds an exclusive lock on ``.NAME.lock`` beside the folder for its
  whole run, from the existence check to the rename; a second writer is refused with one line naming the
  holder. Readers hold a shared lock, so they see the old folder or the new one, whole (a reader that
  finds a writer at work waits for it).
* **No leftovers.** A failed run removes the parent folders it created. What a killed run leaves (staging
  and retired folders beside an output, its scratch folder in TMPDIR) is removed by the next run that can
  tell it is dead: the output's lock for the former, a lock held by the live process for the latter.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import secrets
import shutil
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

from mobileseg.errors import ArtifactError

SCHEMA_PREFIX = "mobileseg."
PNG_SOFTWARE = "mobileseg"  # the PNG ``Software`` text of mobileseg's plots
MARKDOWN_MARK = "<!-- written by mobileseg -->"
TORCH_FORMAT = rb"mobileseg-[a-z0-9-]+/\d"  # the "format" of a PyTorch file of mobileseg's (vos weights)
FOLDER_MANIFEST = "manifest.json"
SCRATCH_PREFIX = "mobileseg-run-"
_ALIVE = ".alive"


# ---- what is ours --------------------------------------------------------------------------------------


def _png_texts(path: Path) -> dict[str, str]:
    """The tEXt chunks of a PNG file (an empty dict for anything else)."""
    texts = {}
    with open(path, "rb") as f:
        if f.read(8) != b"\x89PNG\r\n\x1a\n":
            return texts
        while True:
            header = f.read(8)
            if len(header) < 8:
                return texts
            length, kind = int.from_bytes(header[:4], "big"), header[4:]
            if kind == b"IDAT" or kind == b"IEND":  # matplotlib writes its texts before the image data
                return texts
            data = f.read(length)
            f.seek(4, os.SEEK_CUR)  # CRC
            if kind == b"tEXt" and b"\0" in data:
                key, value = data.split(b"\0", 1)
                texts[key.decode("latin-1")] = value.decode("latin-1")


def _our_document(path: Path) -> dict | None:
    """The JSON object at ``path`` when it carries a ``mobileseg.…`` schema, else None (unreadable,
    not JSON, not an object, someone else's)."""
    try:
        data = json.loads(Path(path).read_bytes())
    except (OSError, ValueError):  # UnicodeDecodeError is a ValueError
        return None
    return data if isinstance(data, dict) and str(data.get("schema", "")).startswith(SCHEMA_PREFIX) else None


def written_by_mobileseg(path: Path) -> bool:
    """Whether the file at ``path`` carries mobileseg's mark: a JSON object whose ``schema`` starts with
    ``mobileseg.``, a PNG whose ``Software`` text is mobileseg's, Markdown that starts with `MARKDOWN_MARK`,
    or a PyTorch file of ours (its pickle holds a `TORCH_FORMAT` string)."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            return _our_document(path) is not None
        if suffix == ".png":
            return _png_texts(path).get("Software", "").startswith(PNG_SOFTWARE)
        if suffix == ".md":
            with open(path, "rb") as f:
                return f.readline().strip() == MARKDOWN_MARK.encode()
        if suffix == ".pt":
            with zipfile.ZipFile(path) as archive:
                pickles = [n for n in archive.namelist() if n.endswith("/data.pkl")]
                return bool(pickles) and re.search(TORCH_FORMAT, archive.read(pickles[0])) is not None
    except (OSError, ValueError, zipfile.BadZipFile):
        return False
    return False


def _files(folder: Path) -> list[str]:
    """Relative POSIX paths of the files under ``folder``, links (to files or folders) included; folders
    themselves hold no data and do not count."""
    files = []
    for root, dirs, names in os.walk(folder, followlinks=False):
        base = Path(root).relative_to(folder)
        files += [(base / name).as_posix() for name in [*names, *(d for d in dirs if (Path(root) / d).is_symlink())]]
    return sorted(files)


def foreign_entries(folder: Path) -> list[str] | None:
    """The files in ``folder`` that mobileseg did not write: ``None`` when it has no manifest of ours (all
    of its files are then foreign), else the files its manifest does not list (links always count)."""
    files = _files(folder)
    if not files:
        return []
    manifest = _our_document(folder / FOLDER_MANIFEST)
    if manifest is None:
        return None
    listed = manifest.get("files")
    listed = {*(listed if isinstance(listed, dict) else ()), FOLDER_MANIFEST}
    return [f for f in files if f not in listed or (folder / f).is_symlink()]


def _listing(names: list[str], most: int = 3) -> str:
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


def check_replaceable_file(path: Path) -> None:
    """Raise `ArtifactError` unless ``path`` is free or a file mobileseg wrote."""
    path = Path(path)
    if path.is_symlink():
        raise ArtifactError(f"{path} is a symbolic link; mobileseg does not write through links: choose another path")
    if not path.exists():
        return
    if path.is_dir():
        raise ArtifactError(f"{path} is a folder; give the path of a file")
    if not written_by_mobileseg(path):
        raise ArtifactError(f"{path} exists and was not written by mobileseg; it is left as it is: choose another path")


def check_destination(out: Path, force: bool) -> None:
    """Raise `ArtifactError` unless folder ``out`` may be written: absent, empty, or (with ``force``) a
    folder mobileseg wrote with nothing else in it."""
    out = Path(out)
    if out.is_symlink():
        raise ArtifactError(f"output folder {out} is a symbolic link; mobileseg does not write through links")
    if not out.exists():
        return
    if not out.is_dir():
        raise ArtifactError(f"output path {out} exists and is not a folder")
    foreign = foreign_entries(out)
    if foreign is None:
        raise ArtifactError(f"output folder {out} exists and is not a mobileseg artifact folder (no manifest.json "
                            "of mobileseg's); it is left as it is: choose another --out")  # fmt: skip
    if foreign:
        raise ArtifactError(f"output folder {out} holds files mobileseg did not write ({_listing(foreign)}); it is "
                            "left as it is: move them or choose another --out")  # fmt: skip
    if not force and any(out.iterdir()):
        raise ArtifactError(f"output folder {out} already exists; pass --force to replace it")


# ---- folders mobileseg creates --------------------------------------------------------------------------


def _cannot_write(path: Path, exc: OSError, target: Path | None = None) -> ArtifactError:
    """One line for a failed write in folder ``path`` (on behalf of ``target``, when given)."""
    what = target or path
    if exc.errno in (errno.ENOTDIR, errno.EEXIST):
        blocker = next((p for p in [path, *path.parents] if p.exists() and not p.is_dir()), path)
        return ArtifactError(f"cannot write {what}: {blocker} is a file, not a folder")
    if exc.errno == errno.ENOSPC:
        return ArtifactError(f"cannot write {what}: no space left on the device")
    reason = (exc.strerror or str(exc)).lower()
    return ArtifactError(f"cannot write {what}: {path} does not allow it ({reason})")


def make_parents(folder: Path, target: Path | None = None) -> list[Path]:
    """Create ``folder`` (the parent of ``target``) and its missing parents; returns the folders created,
    outermost first. `ArtifactError` (one line) when a file is in the way or nothing may be written there."""
    folder = Path(folder)
    blocked = next((p for p in [folder, *folder.parents] if p.exists() and not p.is_dir()), None)
    if blocked is not None:
        raise _cannot_write(blocked, OSError(errno.ENOTDIR, "not a folder"), target)
    missing = [p for p in [folder, *folder.parents] if not p.exists()][::-1]
    created: list[Path] = []
    for path in missing:
        try:
            path.mkdir()
            created.append(path)
        except FileExistsError:  # made by another process meanwhile: fine if it is a folder
            if not path.is_dir():
                remove_created(created)
                raise _cannot_write(path, OSError(errno.ENOTDIR, "not a folder"), target) from None
        except OSError as exc:
            remove_created(created)
            raise _cannot_write(path.parent, exc, target) from None
    return created


def remove_created(created: list[Path]) -> None:
    """Remove the folders `make_parents` created, innermost first, where they are still empty."""
    for path in reversed(created):
        with contextlib.suppress(OSError):
            path.rmdir()


def _token() -> str:
    return f"{os.getpid()}-{secrets.token_hex(4)}"


def write_file(path: Path, data: bytes | str) -> Path:
    """Write ``data`` to ``path`` atomically (a file beside it, then a rename), replacing only a file
    mobileseg wrote; the parents are created (and removed again if the write fails)."""
    path = Path(path)
    check_replaceable_file(path)
    created = make_parents(path.parent, path)
    temp = path.with_name(f".{path.name}.mobileseg-{_token()}.tmp")
    try:
        descriptor = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(descriptor, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.replace(temp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            temp.unlink()
        remove_created(created)
        if isinstance(exc, OSError):
            raise _cannot_write(path.parent, exc, path) from None
        raise
    return path


def write_json_file(path: Path, data: dict) -> Path:
    """`write_file` of a JSON document, which must carry a ``mobileseg.…`` schema (so it can be replaced)."""
    if not str(data.get("schema", "")).startswith(SCHEMA_PREFIX):
        raise ValueError("a JSON file mobileseg writes carries a 'schema' of 'mobileseg.…'")
    return write_file(path, json.dumps(data, indent=1, allow_nan=False) + "\n")


# ---- locks ---------------------------------------------------------------------------------------------


def lock_path(out: Path) -> Path:
    return Path(out).parent / f".{Path(out).name}.lock"


def _holder(descriptor: int) -> str:
    """Who holds a lock, from what its writer wrote into the lock file."""
    try:
        os.lseek(descriptor, 0, os.SEEK_SET)
        info = json.loads(os.read(descriptor, 4096) or b"{}")
        os.kill(int(info["pid"]), 0)  # a killed writer's note is stale: a reader holds it now
    except (OSError, ValueError, KeyError, TypeError):
        return "another mobileseg process (reading it)"
    return f"process {info['pid']} ({info.get('command', 'mobileseg')}, since {info.get('since', '?')})"


def _same_file(descriptor: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(descriptor), os.stat(path))
    except OSError:
        return False


@contextlib.contextmanager
def locked(out: Path, shared: bool = False) -> Iterator[None]:
    """Hold the lock of output folder ``out`` (``.NAME.lock`` beside it; its parent must exist).

    Exclusive (a writer): refused at once with `ArtifactError` naming the holder when anyone holds it.
    Shared (a reader): waits while a writer holds it. A reader where nothing can be written (a read-only
    folder) goes without: no writer can replace anything there either. The last holder removes the file.
    """
    path = lock_path(out)
    while True:
        try:
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            if shared:
                yield
                return
            raise _cannot_write(path.parent, exc, out) from None
        try:
            fcntl.flock(descriptor, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(descriptor)
            if not shared:
                os.close(descriptor)
                raise ArtifactError(f"{out} is being written or read by {holder}; wait for it to end or choose "
                                    "another --out") from None  # fmt: skip
            # a warning reaches stderr through logging's last-resort handler when the caller set none
            logging.getLogger("mobileseg").warning("waiting for %s to finish writing %s", holder, out)
            fcntl.flock(descriptor, fcntl.LOCK_SH)
        if _same_file(descriptor, path):  # else the last holder removed it: lock the file there now
            break
        os.close(descriptor)
    try:
        if not shared:
            note = {"pid": os.getpid(), "command": " ".join(["mobileseg", *sys.argv[1:3]]),
                    "since": time.strftime("%H:%M:%S")}  # fmt: skip
            os.ftruncate(descriptor, 0)
            os.pwrite(descriptor, json.dumps(note).encode(), 0)
        yield
    finally:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the last holder: nobody else waits on it
            os.ftruncate(descriptor, 0)
            path.unlink(missing_ok=True)
        except OSError:
            pass
        os.close(descriptor)


# ---- staged folders ------------------------------------------------------------------------------------


def _leftovers(out: Path) -> list[Path]:
    """Staging and retired folders of ``out`` beside it (this version's names and the earlier ones)."""
    pattern = re.compile(rf"^\.{re.escape(out.name)}\.(mobileseg-(staging|retired)-\d+-[0-9a-f]{{8}}|(tmp|old)-[a-z0-9_]{{8}})$")
    with contextlib.suppress(OSError):
        return sorted(p for p in out.parent.iterdir() if pattern.match(p.name) and p.is_dir() and not p.is_symlink())
    return []


def remove_leftovers(out: Path) -> None:
    """Under ``out``'s lock: remove what killed writers of ``out`` left beside it. A retired folder whose
    replacement never arrived is put back as ``out`` instead."""
    for path in _leftovers(out):
        # this version retires the folder itself; earlier versions moved it into ".NAME.old-*/NAME"
        retired = path if ".mobileseg-retired-" in path.name else path / out.name if ".old-" in path.name else None
        if retired is not None and retired.is_dir() and not out.exists():
            retired.rename(out)
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def staging_folder(out: Path, force: bool) -> Iterator[Path]:
    """Yield an empty folder beside ``out``; when the block succeeds it becomes ``out``, replacing the
    previous folder only if `check_destination` allows it. Everything runs under ``out``'s lock; on
    failure the staging folder and the parent folders created for ``out`` are removed."""
    out = Path(out)
    created = make_parents(out.parent, out)
    try:
        with locked(out):
            remove_leftovers(out)
            check_destination(out, force)
            staging = out.parent / f".{out.name}.mobileseg-staging-{_token()}"
            try:
                staging.mkdir()
            except OSError as exc:
                raise _cannot_write(out.parent, exc, out) from None
            try:
                yield staging
                check_destination(out, force)
                _swap(staging, out)
            finally:
                if staging.exists():
                    shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        remove_created(created)
        raise


def _swap(staging: Path, out: Path) -> None:
    if not out.exists():
        staging.rename(out)
        return
    retired = out.parent / f".{out.name}.mobileseg-retired-{_token()}"
    out.rename(retired)
    try:
        staging.rename(out)
    except BaseException:
        retired.rename(out)  # put the previous folder back
        raise
    shutil.rmtree(retired, ignore_errors=True)


@contextlib.contextmanager
def reading(folder: Path) -> Iterator[None]:
    """Read ``folder`` whole: no writer replaces it until the block ends (`locked`, shared)."""
    folder = Path(folder)
    if not folder.parent.is_dir():
        yield
        return
    with locked(folder, shared=True):
        yield


# ---- scratch folders -----------------------------------------------------------------------------------

_scratch_root: Path | None = None


def _remove_scratch_root(root: Path, descriptor: int) -> None:
    shutil.rmtree(root, ignore_errors=True)
    with contextlib.suppress(OSError):
        os.close(descriptor)


def remove_dead_scratch() -> list[Path]:
    """Remove the scratch folders in TMPDIR whose process is gone (their ``.alive`` lock is free)."""
    removed = []
    for root in Path(tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*"):
        if root == _scratch_root or not root.is_dir() or root.is_symlink():
            continue
        try:
            descriptor = os.open(root / _ALIVE, os.O_RDWR)
        except OSError:
            continue
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            shutil.rmtree(root, ignore_errors=True)
            removed.append(root)
        except OSError:
            pass
        finally:
            os.close(descriptor)
    return removed


def scratch_root() -> Path:
    """This process's scratch folder in TMPDIR, removed at exit; it holds a lock while the process lives,
    so the next run can tell a killed run's folder from a live one's and removes it."""
    global _scratch_root
    if _scratch_root is None or not _scratch_root.is_dir():
        remove_dead_scratch()
        root = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX))
        # locked before it takes its name, so that no other run finds it free in between
        descriptor = os.open(root / f"{_ALIVE}.new", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        os.rename(root / f"{_ALIVE}.new", root / _ALIVE)
        atexit.register(_remove_scratch_root, root, descriptor)
        _scratch_root = root
    return _scratch_root


@contextlib.contextmanager
def scratch(prefix: str = "") -> Iterator[Path]:
    """A temporary folder inside `scratch_root`, removed when the block ends."""
    with tempfile.TemporaryDirectory(prefix=prefix, dir=scratch_root()) as folder:
        yield Path(folder)


def save_figure(fig, path: Path, **savefig_options) -> Path:
    """Lay out, write atomically (`outputs.write_file`: replacing only a plot of mobileseg's, marked in its
    PNG ``Software`` text) and close a matplotlib figure."""
    import io

    import matplotlib.pyplot as plt

    check_replaceable_file(path)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": PNG_SOFTWARE}, **savefig_options)
    plt.close(fig)
    return write_file(path, buffer.getvalue())
