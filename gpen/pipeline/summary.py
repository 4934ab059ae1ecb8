"""The one-line ``info`` of a restore: faces restored (per image for batches), tracks, what was left out."""

from __future__ import annotations

from collections.abc import Sequence

from ..faces.tracking import Tracks

_TRACKS_SHOWN = 32  # tracks listed by number and frames; more are counted


def restore_summary(restored: list[int], detected: list[int], faces: Sequence = (), tracks: Tracks | None = None,
                    unchanged: int = 0) -> str:
    """``restored``/``detected``: faces per image; ``faces``: the restored :class:`gpen.Face` list;
    ``tracks``: when faces were tracked; ``unchanged``: faces left alone as equal to the reference."""
    b = len(restored)
    total = sum(restored)
    notes = []
    if unchanged:
        notes.append(f"{unchanged} face(s) left alone: unchanged from the reference")
    if tracks is not None and tracks.dropped:
        notes.append(f"{tracks.dropped} detection(s) dropped as false (track shorter than min_track)")
    if total == 0:
        text = f"no faces found in {b} image(s); images returned unchanged" if sum(detected) == 0 else \
            f"{sum(detected)} face(s) found but none selected in {b} image(s); images returned unchanged"
        return "; ".join([text] + notes)
    if b == 1:
        text = f"{total} face(s) restored" + (f" of {detected[0]} found" if detected[0] != total else "")
    else:
        per = ",".join(str(r) for r in restored[:64]) + ("..." if b > 64 else "")
        text = f"{total} face(s) restored in {b} images; per image: {per}"
    if tracks is not None:
        spans: dict[int, list[int]] = {}
        for f in faces:
            span = spans.setdefault(f.track, [f.image_index, f.image_index, 0])
            span[0], span[1] = min(span[0], f.image_index), max(span[1], f.image_index)
            span[2] += int(f.interpolated)
        shown = [f"#{n} frames {a}-{z}" + (f" ({k} interpolated)" if k else "")
                 for n, (a, z, k) in sorted(spans.items())[:_TRACKS_SHOWN]]
        more = f", +{len(spans) - _TRACKS_SHOWN} more" if len(spans) > _TRACKS_SHOWN else ""
        text += f"; {len(spans)} track(s) restored: " + ", ".join(shown) + more
    return "; ".join([text] + notes)
