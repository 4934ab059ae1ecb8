"""The verified, resumable downloader for known weight files.

A download streams into ``<file>.<url id>.part`` next to the destination (one partial file per
URL, so bytes from different sources are never mixed), is verified (size and sha256 where the
registry knows them for that URL, then an optional caller-supplied ``validate(path)`` check) and
only then renamed into place with an atomic :func:`os.replace`. Nothing that looks complete is left
behind by a failure:

- a connection cut mid-file keeps the ``.part``; the transfer continues from it with an HTTP
  ``Range`` request (a few times at once, and again on the next run);
- a size or sha256 mismatch, or a file the ``validate`` hook rejects, deletes the ``.part`` and
  says so;
- an HTTP error (404, 403, ...) or a host that cannot be reached moves on to the next URL.

When every URL fails, :class:`~gpen.errors.MissingWeightsError` names the file and the folder to
put it in by hand on its first line, then each URL (and why it failed) on a line of its own. Connections time out after 10 s, so no network fails fast.

One file is downloaded by one process at a time: a lock file (in ``<temp>/comfyui-gpen-locks/``,
via the ``filelock`` package torch depends on) serialises concurrent downloads of the same file
across processes and threads; whoever gets the lock second finds the finished file and uses it.

Environment: ``GPEN_OFFLINE=1`` forbids downloads (the error says where to place files);
``GPEN_MIRROR=<base URL>`` tries ``<base URL>/<file name>`` first for every known file.

Progress: a tqdm bar on stderr (``progress=True``) and ``progress_callback(done_bytes, total)``.
Hosts set a process-wide reporter with :func:`set_progress_reporter` (ComfyUI's progress bar, see
``nodes/downloads.py``); it serves downloads that code further down starts without a callback of
its own (the face detector and parser weights).
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path

from ..errors import MissingWeightsError
from .paths import find_weights, models_dir, search_dirs
from .registry import REGISTRY, WeightsFile, known_file, manifest_for

logger = logging.getLogger(__name__)

ENV_OFFLINE = "GPEN_OFFLINE"
ENV_MIRROR = "GPEN_MIRROR"
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 60.0
MAX_RESUMES = 4
"""Consecutive resumes of one URL within one call (each must have received new bytes)."""
_CHUNK = 1 << 20
_USER_AGENT = "ComfyUI-GPEN"

Validator = Callable[[Path], object]
ProgressCallback = Callable[[int, "int | None"], None]
ProgressReporter = Callable[[WeightsFile], "ProgressCallback | None"]

_thread_locks: dict[Path, threading.Lock] = {}
_thread_locks_guard = threading.Lock()
_reporter: ProgressReporter | None = None


def offline() -> bool:
    """True when ``GPEN_OFFLINE`` is set to a true value: downloads are not attempted."""
    return os.environ.get(ENV_OFFLINE, "").strip().lower() in ("1", "true", "yes", "on")


def set_progress_reporter(reporter: ProgressReporter | None) -> ProgressReporter | None:
    """Install ``reporter(spec) -> callback`` for downloads started without a callback; returns the previous one."""
    global _reporter
    previous, _reporter = _reporter, reporter
    return previous


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def candidate_urls(spec: WeightsFile) -> list[str]:
    """The URLs to try for ``spec``, in order: ``$GPEN_MIRROR/<name>`` first for known files."""
    urls = list(spec.urls)
    mirror = os.environ.get(ENV_MIRROR, "").strip()
    if mirror and REGISTRY.get(spec.name) == spec:
        urls.insert(0, f"{mirror.rstrip('/')}/{spec.name}")
    return list(dict.fromkeys(urls))


def part_path(target: Path, url: str) -> Path:
    """The partial file of ``target`` downloaded from ``url``."""
    return target.with_name(f"{target.name}.{hashlib.sha1(url.encode()).hexdigest()[:10]}.part")


LOCK_DIR = Path(tempfile.gettempdir()) / "comfyui-gpen-locks"


def lock_path(target: Path) -> Path:
    """The lock file that serialises downloads of ``target`` (in the temp folder, so model folders stay clean)."""
    key = hashlib.sha1(os.path.abspath(target).encode()).hexdigest()[:16]
    return LOCK_DIR / f"{target.name}.{key}.lock"


def discard(path: Path) -> None:
    """Delete ``path`` if it exists; a failure (a file still open elsewhere on Windows) is logged, not raised."""
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        logger.warning("could not delete %s: %s", path, exc)


class _Unusable(Exception):
    """This URL does not serve the file (HTTP error, no connection, wrong announced size)."""


class _Interrupted(Exception):
    """The transfer stopped early; the ``.part`` is kept. ``progressed``: new bytes arrived first."""

    def __init__(self, message: str, progressed: bool) -> None:
        super().__init__(message)
        self.progressed = progressed


class _Rejected(Exception):
    """The complete file failed a check; its ``.part`` must be deleted."""


_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


def _open(url: str, start: int):
    headers = {"User-Agent": _USER_AGENT}
    if start:
        headers["Range"] = f"bytes={start}-"
    req = urllib.request.Request(url, headers=headers)
    return urllib.request.urlopen(req, timeout=CONNECT_TIMEOUT_S)  # noqa: S310 (URLs from the registry or the user)


def _fetch_once(url: str, part: Path, spec: WeightsFile, bar, callback: ProgressCallback | None) -> None:
    """One HTTP request: continue ``part`` from its end (Range) or write it anew."""
    have = part.stat().st_size if part.exists() else 0
    expected = spec.size if spec.hashed(url) else None
    if expected is not None and have > expected:
        discard(part)
        have = 0
    try:
        resp = _open(url, have)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing after our end: the part is complete, or bigger than the file
            match = re.search(r"\*/(\d+)", exc.headers.get("Content-Range", "") or "")
            if match and int(match.group(1)) == have:
                return
            discard(part)
            raise _Interrupted("the partial file does not fit the server's file; starting again", True) from exc
        raise _Unusable(f"HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        if have:
            raise _Interrupted(f"cannot connect ({reason})", False) from exc
        raise _Unusable(f"cannot connect ({reason})") from exc
    with resp:
        # Connection is up: allow slower reads than the connect timeout (best effort, private attribute).
        sock = getattr(getattr(resp.fp, "raw", None), "_sock", None)
        if sock is not None:
            sock.settimeout(READ_TIMEOUT_S)
        length = resp.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        offset, total = 0, length
        if have and resp.status == 206:
            match = _CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
            if match is None or int(match.group(1)) != have:
                discard(part)
                where = resp.headers.get("Content-Range")
                raise _Interrupted(f"the server resumed at the wrong place ({where!r})", True)
            offset = have
            total = int(match.group(3)) if match.group(3) != "*" else (have + length if length is not None else None)
            logger.info("resuming %s at %d bytes", spec.name, have)
        if expected is not None and total is not None and total != expected:
            raise _Unusable(f"server announces {total} bytes, expected {expected}")
        total = total if total is not None else expected
        bar.reset(total=total)
        bar.update(offset)
        done = 0
        try:
            with open(part, "ab" if offset else "wb") as out:
                while True:
                    block = resp.read(_CHUNK)
                    if not block:
                        break
                    out.write(block)
                    done += len(block)
                    bar.update(len(block))
                    if callback is not None:
                        callback(offset + done, total)
        except (OSError, ValueError, http.client.HTTPException) as exc:  # reset, timeout, disk full
            raise _Interrupted(f"transfer interrupted after {offset + done} bytes ({exc!r})", done > 0) from exc
        if total is not None and offset + done != total:
            raise _Interrupted(f"incomplete transfer: got {offset + done} of {total} bytes", done > 0)


def _fetch(url: str, part: Path, spec: WeightsFile, progress: bool, callback: ProgressCallback | None) -> bool:
    """Download ``url`` into ``part``, resuming after cuts; True when any bytes came from a resume."""
    from tqdm import tqdm

    resumed = part.exists() and part.stat().st_size > 0
    resumes = 0
    with tqdm(total=spec.size, unit="B", unit_scale=True, unit_divisor=1024, desc=spec.name,
              disable=not progress, file=sys.stderr, leave=False, delay=1.0) as bar:
        while True:
            try:
                _fetch_once(url, part, spec, bar, callback)
                return resumed
            except _Interrupted as exc:
                if not exc.progressed or resumes >= MAX_RESUMES:
                    raise
                resumes += 1
                resumed = part.exists() and part.stat().st_size > 0
                logger.warning("download of %s from %s: %s; resuming (%d/%d)", spec.name, url, exc, resumes,
                               MAX_RESUMES)


MANIFEST_MAX_BYTES = 8 << 20


def manifest_hash(url: str) -> tuple[str, int | None] | None:
    """(sha256, size) of the file ``url`` serves, from its source's manifest (ModelScope's file list,
    :func:`gpen.weights.registry.manifest_for`); None when the URL has no manifest or it names no hash.
    ``_Unusable`` when the manifest cannot be read."""
    import json

    found = manifest_for(url)
    if found is None:
        return None
    manifest_url, file_path = found
    try:
        with _open(manifest_url, 0) as resp:
            data = json.loads(resp.read(MANIFEST_MAX_BYTES))
        files = data["Data"]["Files"]
    except (urllib.error.URLError, OSError, ValueError, KeyError, TypeError) as exc:
        raise _Unusable(f"cannot read the source's file list {manifest_url} ({exc})") from exc
    for entry in files if isinstance(files, list) else []:
        if isinstance(entry, dict) and entry.get("Path", entry.get("Name")) == file_path and entry.get("Sha256"):
            size = entry.get("Size")
            return str(entry["Sha256"]).lower(), int(size) if isinstance(size, int) and size > 0 else None
    return None


def _verify(path: Path, spec: WeightsFile, url: str | None, validate: Validator | None,
            manifest: tuple[str, int | None] | None = None) -> None:
    """Raise ``_Rejected`` unless ``path`` has the size/sha256 known for ``url`` (or the source's
    ``manifest`` (sha256, size)) and passes ``validate``.

    ``url=None`` (a file already on disk, source unknown): size/sha256 are required only when every
    source of the file is hashed.
    """
    hashed = spec.hashed(url) if url is not None else not spec.unhashed
    if manifest is not None and not hashed:
        sha, size = manifest
        got = path.stat().st_size
        if size is not None and got != size:
            raise _Rejected(f"wrong size: {got} bytes, the source's manifest says {size}")
        digest = sha256_of(path)
        if digest != sha:
            raise _Rejected(f"sha256 mismatch: got {digest}, the source's manifest says {sha}")
    if hashed:
        size = path.stat().st_size
        if spec.size is not None and size != spec.size:
            raise _Rejected(f"wrong size: {size} bytes, expected {spec.size}")
        if spec.sha256 is not None:
            digest = sha256_of(path)
            if digest != spec.sha256.lower():
                raise _Rejected(f"sha256 mismatch: got {digest}, expected {spec.sha256}")
    if validate is not None:
        try:
            ok = validate(path)
        except Exception as exc:  # the hook's own error explains what is wrong with the file
            raise _Rejected(f"the downloaded file failed validation: {exc}") from exc
        if ok is False:
            raise _Rejected("the downloaded file failed validation")


def _missing_message(spec: WeightsFile, dest_dir: Path, detail: str, sources: Iterable[str]) -> str:
    """The first line says what is missing and the folder to put it in; then one line per source
    (a URL to download it by hand from, with why it failed where it was tried)."""
    listed = "\n".join(f"  {u}" for u in sources)
    return f"{spec.name} {detail}: put the file in {dest_dir}; its sources:\n{listed}"


class _Exclusive:
    """Holds the in-process and the cross-process lock of one target file."""

    def __init__(self, target: Path) -> None:
        from filelock import FileLock

        with _thread_locks_guard:
            self._thread = _thread_locks.setdefault(target, threading.Lock())
        path = lock_path(target)
        try:
            if not path.parent.is_dir():
                path.parent.mkdir(exist_ok=True)
                path.parent.chmod(0o1777)  # shared by every user, like the temp folder itself
            if not path.exists():
                path.touch()
                path.chmod(0o666)
            path.touch()  # fails where this user may not open it
        except OSError:  # e.g. a lock another user owns: lock next to the file instead
            path = target.with_name(f".{target.name}.lock")
        self._file = FileLock(str(path), mode=0o666)
        self._target = target

    def __enter__(self) -> _Exclusive:
        from filelock import Timeout

        if not self._thread.acquire(blocking=False):
            logger.info("waiting for another download of %s in this process", self._target.name)
            self._thread.acquire()
        try:
            try:
                self._file.acquire(timeout=0)
            except Timeout:
                logger.info("waiting for another process downloading %s", self._target)
                self._file.acquire()
        except BaseException:
            self._thread.release()
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            self._file.release()
        finally:
            self._thread.release()


def _try_url(url: str, target: Path, spec: WeightsFile, progress: bool, validate: Validator | None,
             callback: ProgressCallback | None) -> None:
    """Download ``spec`` from ``url`` into place (raises ``_Unusable``/``_Interrupted``/``_Rejected``)."""
    part = part_path(target, url)
    manifest = manifest_problem = None
    if not spec.hashed(url):
        try:
            manifest = manifest_hash(url)
        except _Unusable as exc:  # the file list is down, the file may not be: its layout is still checked
            manifest_problem = exc
    for fresh_retry in (False, True):
        try:
            resumed = _fetch(url, part, spec, progress, callback)
        except _Unusable:
            discard(part)  # the URL no longer serves this file: its partial file is of no use
            raise
        if manifest_problem is not None:  # said only for a file that came: a source that is down is named once
            logger.warning("%s: %s; checking the file by its layout only", spec.name, manifest_problem)
            manifest_problem = None
        try:
            _verify(part, spec, url, validate, manifest)
        except _Rejected as exc:
            discard(part)
            if resumed and not fresh_retry:  # the bytes before the cut may be from an older file
                logger.warning("%s from %s: %s after a resume; deleted it, downloading it once more from the start",
                               spec.name, url, exc)
                continue
            raise _Rejected(f"{exc}; deleted the downloaded file") from exc
        os.replace(part, target)
        return


def download(
    name: str | WeightsFile,
    dest_dir: str | os.PathLike | None = None,
    progress: bool = True,
    validate: Validator | None = None,
    progress_callback: ProgressCallback | None = None,
    force: bool = False,
) -> Path:
    """Download a known weights file into ``dest_dir`` (default: its kind's models folder).

    A file already there that passes the checks is returned as it is (also when another process
    downloaded it while this one waited for the lock), unless ``force``. Otherwise the URLs of
    :func:`candidate_urls` are tried in order (see the module docstring for resuming, checks and
    clean-up); ``validate(path)`` raises or returns False to reject a file. A verified file replaces
    an old one atomically. When every URL fails, :class:`MissingWeightsError` names the file, the
    URLs and the folder. Returns the final path.
    """
    spec = known_file(name)
    dest = Path(dest_dir) if dest_dir is not None else models_dir(spec.kind)
    target = dest / spec.name
    urls = candidate_urls(spec)
    if offline():
        raise MissingWeightsError(_missing_message(spec, dest, f"is missing and downloads are disabled ({ENV_OFFLINE} "
                                                   f"is set)", urls))
    try:
        dest.mkdir(parents=True, exist_ok=True)
        lock = _Exclusive(target)
    except OSError as exc:
        raise MissingWeightsError(_missing_message(spec, dest, f"cannot be downloaded: its folder cannot be created "
                                                   f"({exc})", urls)) from exc
    with lock:
        if target.is_file() and not force:
            try:
                _verify(target, spec, None, validate)
                logger.info("%s is already in %s", spec.name, dest)
                return target
            except _Rejected as exc:
                logger.warning("%s exists but %s: downloading it again (the old file stays until a verified "
                               "one replaces it)", target, exc)
        callback = progress_callback or (_reporter(spec) if _reporter is not None else None)
        failures: list[str] = []
        logger.info("downloading %s into %s", spec.name, dest)
        for url in urls:
            logger.debug("downloading %s from %s to %s", spec.name, url, target)
            try:
                _try_url(url, target, spec, progress, validate, callback)
            except _Interrupted as exc:
                kept = part_path(target, url)
                note = f"; kept the partial file {kept.name} to resume from next time" if kept.exists() else ""
                failures.append(f"{url}: {exc}{note}")
            except (_Unusable, _Rejected) as exc:
                failures.append(f"{url}: {exc}")
            else:
                for leftover in target.parent.glob(f"{glob_escape(target.name)}.*.part"):
                    discard(leftover)
                logger.info("saved %s", target)
                return target
            logger.debug("download of %s failed: %s", spec.name, failures[-1])
        raise MissingWeightsError(_missing_message(spec, dest, "could not be downloaded", failures))


def glob_escape(name: str) -> str:
    """``name`` with glob metacharacters escaped (file names such as ``mobilenet0.25`` are safe as they are)."""
    return re.sub(r"([\[\]*?])", r"[\1]", name)


def ensure_weights(
    name: str | WeightsFile,
    kind: str,
    extra_dirs: Iterable[str | os.PathLike] = (),
    allow_download: bool = True,
    validate: Validator | None = None,
    dest_dir: str | os.PathLike | None = None,
    progress: bool = True,
    progress_callback: ProgressCallback | None = None,
) -> Path:
    """Path of weights file ``name``: found in ``extra_dirs`` or the ``kind`` folder, else downloaded.

    Files already on disk are used as they are (users may hold other valid copies). A file that is
    absent and cannot be downloaded (unknown file, ``allow_download=False``, ``GPEN_OFFLINE``, no
    network) raises :class:`MissingWeightsError` naming the file, the folders searched and, for known
    files, the URLs.
    """
    file_name = name.name if isinstance(name, WeightsFile) else name
    extra = list(extra_dirs)
    found = find_weights(file_name, kind, extra)
    if found is not None:
        return found
    # downloads land in the caller's first folder (e.g. the one ComfyUI is configured with)
    dest = Path(dest_dir) if dest_dir is not None else (Path(extra[0]) if extra else models_dir(kind))
    searched = ", ".join(str(d) for d in search_dirs(kind, extra))
    spec = name if isinstance(name, WeightsFile) else REGISTRY.get(name)
    if spec is None:
        raise MissingWeightsError(f"Weights file {file_name} was not found (searched {searched}): put the file in {dest}.")
    if not allow_download or offline():
        why = "downloads are disabled" + (f" ({ENV_OFFLINE} is set)" if offline() else "")
        raise MissingWeightsError(_missing_message(spec, dest, f"is missing ({why}; searched {searched})",
                                                   candidate_urls(spec)))
    try:
        return download(spec, dest, progress=progress, validate=validate, progress_callback=progress_callback)
    except MissingWeightsError as exc:
        first, _, rest = str(exc).partition("\n")
        raise MissingWeightsError(f"{first} (searched {searched} first)\n{rest}".rstrip()) from exc


__all__ = ["candidate_urls", "discard", "download", "ensure_weights", "lock_path", "offline", "part_path",
           "set_progress_reporter", "sha256_of"]
