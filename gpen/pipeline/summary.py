"""The one-line ``info`` of a restore: faces restored (per image for batches), tracks, what was left out."""

from __future__ import annotations

from collections.abc import Sequence

from ..faces.tracking import FALSE_DETECTION_SCORE, Tracks

_TRACKS_SHOWN = 32  # tracks listed by number and frames; more are counted
_SHOTS_SHOWN = 16  # shots listed with what tracking did there; more are counted


def _frames(a: int, z: int) -> str:
    return f"frame {a}" if z - a == 1 else f"frames {a}-{z - 1}"


def shots_summary(shots: Sequence[tuple[int, int]], tracks: Tracks | None) -> str:
    """How the batch splits into shots and, with tracking, per shot what was linked, filled and dropped."""
    if len(shots) <= 1 and tracks is None:
        return ""
    singles = sum(1 for a, z in shots if z - a == 1)
    text = f"{len(shots)} shot(s)" + (f" ({singles} single picture(s): faces as found)" if singles else "")
    if tracks is None:
        return text
    parts = []
    for a, z in shots[:_SHOTS_SHOWN]:
        r = tracks.shot_report((a, z))
        bits = [f"{r['tracks']} track(s)"]
        if r["filled"]:
            bits.append(f"{r['filled']} missed face(s) filled")
        if r["unfilled"]:
            bits.append(f"{r['unfilled']} gap(s) left empty (the frame shows no face there)")
        if r["dropped"]:
            bits.append(f"{r['dropped']} detection(s) dropped (seen once, score < {FALSE_DETECTION_SCORE})")
        parts.append(f"{_frames(a, z)}: " + ", ".join(bits))
    more = f", +{len(shots) - _SHOTS_SHOWN} more" if len(shots) > _SHOTS_SHOWN else ""
    return text + ": " + "; ".join(parts) + more


def restore_summary(restored: list[int], detected: list[int], faces: Sequence = (), tracks: Tracks | None = None,
                    unchanged: int = 0, shots: Sequence[tuple[int, int]] = ()) -> str:
    """``restored``/``detected``: faces per image; ``faces``: the restored :class:`gpen.Face` list;
    ``tracks``: when faces were tracked; ``unchanged``: faces left alone as equal to the reference;
    ``shots``: the batch's shots (frame ranges), reported with what tracking did in each."""
    b = len(restored)
    total = sum(restored)
    notes = []
    if unchanged:
        notes.append(f"{unchanged} face(s) left alone: unchanged from the reference")
    if tracks is not None and tracks.dropped:
        notes.append(f"{tracks.dropped} detection(s) dropped as false (track shorter than min_track, "
                     f"score < {FALSE_DETECTION_SCORE})")
    shot_text = shots_summary(shots, tracks)
    if shot_text:
        notes.append(shot_text)
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
