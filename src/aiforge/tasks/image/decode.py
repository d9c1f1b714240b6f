"""Safe image decoding for requests and files: format by magic bytes, limits before decoding.

Order of checks for bytes from a client: byte count, magic bytes (JPEG, PNG or WebP only),
header-only open to read the pixel count and the aspect ratio (decompression bombs and
100000x1 strips are refused before any pixel is decoded), full decode (truncated or corrupt
data named), EXIF orientation applied.
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from aiforge.bundle.inputs import check_text
from aiforge.errors import DataError, InputError
from aiforge.tasks.image.preprocess import check_aspect

__all__ = ["ALLOWED_FORMATS", "decode_base64", "decode_image", "open_image_file", "sniff_format"]


ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP")


def sniff_format(data: bytes) -> str | None:
    """``"JPEG"``, ``"PNG"`` or ``"WEBP"`` from the first bytes, else None."""
    if data[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def _describe(data: bytes) -> str:
    if data[:4] == b"GIF8":
        return "a GIF"
    if data[:2] == b"BM":
        return "a BMP"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "a TIFF"
    if data[:4] == b"%PDF":
        return "a PDF"
    if data.lstrip()[:1] in (b"<", b"{", b"["):
        return "text (HTML/XML/JSON?)"
    return f"bytes starting {data[:8].hex()}"


def decode_image(data: bytes, *, where: str, max_bytes: int, max_pixels: int) -> Image.Image:
    """Decode ``data`` into a fully loaded, EXIF-oriented Pillow image.

    Raises:
        InputError: too many bytes, not JPEG/PNG/WebP, too many pixels, an aspect ratio over
            ``MAX_ASPECT_RATIO``, truncated or corrupt;
            the message starts with ``where``.
    """
    if len(data) > max_bytes:
        raise InputError(f"{where}: image of {len(data)} bytes, over the limit of {max_bytes}")
    if not data:
        raise InputError(f"{where}: empty image")
    fmt = sniff_format(data)
    if fmt is None:
        raise InputError(f"{where}: not a JPEG, PNG or WebP image (got {_describe(data)})")
    try:
        with warnings.catch_warnings():
            # Pillow's own guard stays on as a backstop (it errors at twice its limit); below
            # that its warning is silenced and the server's configured limit decides.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=[fmt])  # reads the header only
            w, h = img.size
            if w <= 0 or h <= 0:
                raise InputError(f"{where}: image has no pixels ({w}x{h})")
            if w * h > max_pixels:
                raise InputError(f"{where}: image of {w}x{h} = {w * h} pixels, over the limit of {max_pixels} "
                                 "(refused before decoding)")
            check_aspect(w, h, where=where)
            img.load()
            return ImageOps.exif_transpose(img) or img
    except InputError:
        raise
    except Image.DecompressionBombError as exc:
        raise InputError(f"{where}: image refused before decoding: too many pixels for a safe decode ({exc})") from None
    except UnidentifiedImageError:
        raise InputError(f"{where}: not a readable {fmt} image (corrupt header)") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        reason = "truncated" if "truncated" in str(exc).lower() else "corrupt"
        raise InputError(f"{where}: {fmt} image is {reason} ({exc})") from None


def decode_base64(text: str, *, where: str, max_bytes: int) -> bytes:
    """The bytes of a base64 string (a ``data:image/...;base64,`` prefix is allowed).

    Raises:
        InputError: not a string, not base64, or more than ``max_bytes`` once decoded.
    """
    if not isinstance(text, str):
        raise InputError(f"{where}: expected a base64-encoded image string, got {type(text).__name__}")
    check_text(text, where)  # the one shared check: a lone surrogate is refused the same way everywhere
    if text.startswith("data:"):
        head, _, text = text.partition(",")
        if ";base64" not in head:
            raise InputError(f"{where}: data URL is not base64-encoded")
    if len(text) // 4 * 3 > max_bytes + 3:  # refuse before decoding
        raise InputError(f"{where}: image of about {len(text) // 4 * 3} bytes, over the limit of {max_bytes}")
    try:
        return base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InputError(f"{where}: not valid base64 ({exc})") from None


def open_image_file(path: Path, *, max_pixels: int = 100_000_000) -> Image.Image:
    """Read an image file for training or prediction, exactly as a server decodes uploaded bytes.

    Raises:
        DataError: the file is missing, not JPEG/PNG/WebP, or unreadable (names the path).
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read image file ({exc.strerror or exc}).") from exc
    try:
        return decode_image(data, where=str(path), max_bytes=max(len(data), 1), max_pixels=max_pixels)
    except InputError as exc:
        raise DataError(f"{exc}.") from None
