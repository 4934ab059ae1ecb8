"""Draw the pack's registry icon: ``python docs/make_icon.py`` writes ``assets/icon.png``.

A 256 x 256 square (the Comfy Registry shows icons up to 400 px): a face photograph split like the
restore node's before/after view, degraded on the left, sharp on the right, and the pack's name.
The photograph is ``skimage.data.astronaut()`` (NASA, public domain). It illustrates the idea of
restoration; it is not a GPEN output.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter, ImageFont

REPO = Path(__file__).resolve().parents[1]
SIZE = 256
FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf")


def draw() -> Image.Image:
    from skimage.data import astronaut

    face = Image.fromarray(astronaut()).crop((120, 10, 330, 220)).resize((196, 196), Image.LANCZOS)
    degraded = face.resize((28, 28), Image.BILINEAR).resize(face.size, Image.BILINEAR).filter(ImageFilter.GaussianBlur(1.5))
    half = face.width // 2
    split = face.copy()
    split.paste(degraded.crop((0, 0, half, face.height)), (0, 0))
    mask = Image.new("L", face.size, 0)
    ImageDraw.Draw(mask).rounded_rectangle((0, 0, face.width - 1, face.height - 1), radius=28, fill=255)

    icon = Image.new("RGB", (SIZE, SIZE), (30, 31, 36))
    left = (SIZE - face.width) // 2
    icon.paste(split, (left, 14), mask)
    pen = ImageDraw.Draw(icon)
    pen.line((left + half, 14, left + half, 14 + face.height - 1), fill=(255, 255, 255), width=3)
    font = ImageFont.truetype(str(FONT), 34) if FONT.is_file() else ImageFont.load_default()
    text = "GPEN"
    box = pen.textbbox((0, 0), text, font=font)
    pen.text(((SIZE - (box[2] - box[0])) / 2 - box[0], 216 - box[1]), text, font=font, fill=(240, 240, 240))
    return icon


def main() -> None:
    out = REPO / "assets" / "icon.png"
    draw().save(out, optimize=True)
    print("wrote", out.relative_to(REPO))


if __name__ == "__main__":
    main()
