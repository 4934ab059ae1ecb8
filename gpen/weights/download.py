"""Known weight files and a safe downloader for them.

A download streams into ``<file>.part`` next to the destination, is verified (size and sha256 where
known, then an optional caller-supplied ``validate(path)`` check) and only then renamed into place
with an atomic :func:`os.replace`. On any failure the ``.part`` file is deleted, so nothing that
looks complete is ever left behind. Without network access it fails fast (10 s connect timeout)
with a :class:`~gpen.errors.MissingWeightsError` that names the file, the URL and the folder to put
the file in by hand.

Set ``GPEN_OFFLINE=1`` to forbid downloads altogether (the error then says where to place files).

The registry of known files is :mod:`gpen.weights.registry`.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path

from ..errors import MissingWeightsError
from .paths import find_weights, models_dir, search_dirs
from .registry import REGISTRY, WeightsFile, known_file

logger = logging.getLogger(__name__)

ENV_OFFLINE = "GPEN_OFFLINE"
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 60.0
_CHUNK = 1 << 20
_USER_AGENT = "ComfyUI-GPEN"

Validator = Callable[[Path], object]
ProgressCallback = Callable[[int, "int | None"], None]


_locks: dict[Path, threading.Lock] = {}
_locks_guard = threading.Lock()


def _lock_for(path: Path) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(path, threading.Lock())


def offline() -> bool:
    """True when ``GPEN_OFFLINE`` is set to a true value: downloads are not attempted."""
    return os.environ.get(ENV_OFFLINE, "").strip().lower() in ("1", "true", "yes", "on")


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


class _AttemptFailed(Exception):
    """One URL did not yield a valid file; the message says why."""


def _stream_to(url: str, part: Path, spec: WeightsFile, progress: bool, callback: ProgressCallback | None) -> None:
    from tqdm import tqdm

    req = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    try:
        resp = urllib.request.urlopen(req, timeout=CONNECT_TIMEOUT_S)  # noqa: S310 (https URLs from the registry)
    except urllib.error.HTTPError as exc:
        raise _AttemptFailed(f"HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise _AttemptFailed(f"cannot connect ({reason})") from exc
    with resp:
        # Connection is up: allow slower reads than the connect timeout (best effort, private attribute).
        sock = getattr(getattr(resp.fp, "raw", None), "_sock", None)
        if sock is not None:
            sock.settimeout(READ_TIMEOUT_S)
        length = resp.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else spec.size
        if spec.size is not None and length and length.isdigit() and int(length) != spec.size:
            raise _AttemptFailed(f"server announces {length} bytes, expected {spec.size}")
        done = 0
        try:
            with (
                open(part, "wb") as out,
                tqdm(
                    total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=spec.name,
                    disable=not progress, file=sys.stderr, leave=False,
                ) as bar,
            ):
                while True:
                    block = resp.read(_CHUNK)
                    if not block:
                        break
                    out.write(block)
                    done += len(block)
                    bar.update(len(block))
                    if callback is not None:
                        callback(done, total)
        except (OSError, ValueError, http.client.HTTPException) as exc:  # reset, timeout, disk full
            raise _AttemptFailed(f"transfer interrupted after {done} bytes ({exc!r})") from exc
        if length and length.isdigit() and done != int(length):
            raise _AttemptFailed(f"incomplete transfer: got {done} of {length} bytes")


def _verify(part: Path, spec: WeightsFile, validate: Validator | None) -> None:
    size = part.stat().st_size
    if spec.size is not None and size != spec.size:
        raise _AttemptFailed(f"wrong size: {size} bytes, expected {spec.size}")
    if spec.sha256 is not None:
        digest = sha256_of(part)
        if digest != spec.sha256.lower():
            raise _AttemptFailed(f"sha256 mismatch: got {digest}, expected {spec.sha256}")
    if validate is not None:
        try:
            ok = validate(part)
        except Exception as exc:  # the hook's own error explains what is wrong with the file
            raise _AttemptFailed(f"the downloaded file failed validation: {exc}") from exc
        if ok is False:
            raise _AttemptFailed("the downloaded file failed validation")


def _missing_message(spec: WeightsFile, dest_dir: Path, detail: str) -> str:
    urls = "\n".join(f"  {u}" for u in spec.urls)
    return (
        f"Weights file {spec.name} is missing and {detail}\n"
        f"Download it by hand from:\n{urls}\n"
        f"and place it in the folder:\n  {dest_dir}"
    )


def download(
    name: str | WeightsFile,
    dest_dir: str | os.PathLike | None = None,
    progress: bool = True,
    validate: Validator | None = None,
    progress_callback: ProgressCallback | None = None,
) -> Path:
    """Download a known weights file into ``dest_dir`` (default: its kind's models folder).

    The URLs are tried in order. Each attempt streams into ``<file>.part`` (tqdm bar on stderr when
    ``progress``), is checked against the registry's size and sha256 when known and then with
    ``validate(path)`` (raise or return False to reject), and is moved into place atomically. A
    failed attempt deletes its ``.part`` file. When every URL fails, :class:`MissingWeightsError`
    names the file, the URLs and the folder to put the file in. Returns the final path.
    """
    spec = known_file(name)
    dest = Path(dest_dir) if dest_dir is not None else models_dir(spec.kind)
    target = dest / spec.name
    if offline():
        raise MissingWeightsError(_missing_message(spec, dest, f"downloads are disabled ({ENV_OFFLINE} is set)."))
    with _lock_for(target):
        try:
            dest.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise MissingWeightsError(_missing_message(spec, dest, f"its folder cannot be created ({exc}).")) from exc
        part = target.with_name(target.name + ".part")
        failures: list[str] = []
        for url in spec.urls:
            logger.info("downloading %s from %s to %s", spec.name, url, target)
            try:
                _stream_to(url, part, spec, progress, progress_callback)
                _verify(part, spec, validate)
                os.replace(part, target)
                logger.info("saved %s", target)
                return target
            except _AttemptFailed as exc:
                logger.warning("download of %s from %s failed: %s", spec.name, url, exc)
                failures.append(f"  {url}: {exc}")
            finally:
                # After a success the .part is gone already; after any failure (including
                # KeyboardInterrupt) nothing partial may stay behind.
                part.unlink(missing_ok=True)
        detail = "could not be downloaded:\n" + "\n".join(failures)
        raise MissingWeightsError(_missing_message(spec, dest, detail))


def ensure_weights(
    name: str | WeightsFile,
    kind: str,
    extra_dirs: Iterable[str | os.PathLike] = (),
    allow_download: bool = True,
    validate: Validator | None = None,
    dest_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> Path:
    """Path of weights file ``name``: found in ``extra_dirs`` or the ``kind`` folder, else downloaded.

    Files already on disk are used as they are (users may hold other valid copies). A file that is
    absent and cannot be downloaded (unknown file, ``allow_download=False``, ``GPEN_OFFLINE``, no
    network) raises :class:`MissingWeightsError` naming the file, the folders searched and, for known
    files, the URL.
    """
    file_name = name.name if isinstance(name, WeightsFile) else name
    extra = list(extra_dirs)
    found = find_weights(file_name, kind, extra)
    if found is not None:
        return found
    # downloads land in the caller's first folder (e.g. the one ComfyUI is configured with)
    dest = Path(dest_dir) if dest_dir is not None else (Path(extra[0]) if extra else models_dir(kind))
    searched = "\n".join(f"  {d}" for d in search_dirs(kind, extra))
    spec = name if isinstance(name, WeightsFile) else REGISTRY.get(name)
    if spec is None:
        raise MissingWeightsError(
            f"Weights file {file_name} was not found. Searched:\n{searched}\nPlace the file in:\n  {dest}"
        )
    if not allow_download or offline():
        why = "downloads are disabled" + (f" ({ENV_OFFLINE} is set)" if offline() else "")
        raise MissingWeightsError(_missing_message(spec, dest, f"was not found ({why}). Searched:\n{searched}"))
    try:
        return download(spec, dest, progress=progress, validate=validate)
    except MissingWeightsError as exc:
        raise MissingWeightsError(f"{exc}\n(Searched before downloading:\n{searched})") from exc


__all__ = ["download", "ensure_weights", "offline", "sha256_of"]
