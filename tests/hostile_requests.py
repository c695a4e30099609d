"""Every bad request the hostile-input tests send, with the status and problem type it must get.

One list, so the tests and the "Bad input" table of docs/reliability.md cannot drift apart:
``python -m tests.hostile_requests`` prints the table, whose last rows are the broken
framings of tests/framing_requests.py (sent raw by tests/test_request_framing.py).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import requests
from PIL import Image

from penguin_api.config import Settings
from tests import framing_requests as framing
from tests import image_samples as samples

TIMEOUT = 60


@dataclass(frozen=True)
class Case:
    """One bad request: what it is, how to send it, what must come back."""

    id: str
    what: str
    send: Callable[[str], requests.Response]  # base URL -> response
    status: int
    problem: str  # the problem `type` slug


def _upload(
    data: bytes, filename: str = "photo.jpg", mime: str = "image/jpeg", field: str = "file"
) -> Callable[[str], requests.Response]:
    def send(base: str) -> requests.Response:
        return requests.post(
            base + "/predict", files={field: (filename, data, mime)}, timeout=TIMEOUT
        )

    return send


def _raw(
    body: bytes, content_type: str | None, path: str = "/predict", method: str = "POST"
) -> Callable[[str], requests.Response]:
    def send(base: str) -> requests.Response:
        headers = {"Content-Type": content_type} if content_type else {}
        return requests.request(method, base + path, data=body, headers=headers, timeout=TIMEOUT)

    return send


def _headers(path: str, headers: dict[str, str]) -> Callable[[str], requests.Response]:
    def send(base: str) -> requests.Response:
        return requests.get(base + path, headers=headers, timeout=TIMEOUT)

    return send


def _many_parts(data: bytes, parts: int) -> Callable[[str], requests.Response]:
    def send(base: str) -> requests.Response:
        files = [("note", ("n.txt", b"x", "text/plain"))] * parts
        files.append(("file", ("a.jpg", data, "image/jpeg")))
        return requests.post(base + "/predict", files=files, timeout=TIMEOUT)

    return send


def _two_files(data: bytes) -> Callable[[str], requests.Response]:
    def send(base: str) -> requests.Response:
        files = [("file", ("a.jpg", data, "image/jpeg")), ("file", ("b.jpg", data, "image/jpeg"))]
        return requests.post(base + "/predict", files=files, timeout=TIMEOUT)

    return send


def _jpeg(size: tuple[int, int] = (320, 240)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (40, 90, 140)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _oversized() -> bytes:
    """Random-looking bytes one MiB over the upload limit (a JPEG header in front)."""
    limit = Settings().max_upload_bytes
    return _jpeg()[:600] + bytes(range(256)) * ((limit + 1024 * 1024) // 256)


def cases() -> list[Case]:
    """All bad requests, built now (a few MB in total)."""
    good = samples.good_images()
    jpeg, png = good["jpeg"], good["png_rgb"]
    max_pixels = Settings().max_image_pixels
    boundary = "penguinboundary"
    return [
        Case("empty-file", "empty file (0 bytes)", _upload(b""), 400, "empty-file"),
        Case("truncated-jpeg", "JPEG cut in half", _upload(samples.truncated(jpeg)),
             415, "unsupported-image"),
        Case("truncated-png", "PNG cut in half", _upload(samples.truncated(png), "a.png",
             "image/png"), 415, "unsupported-image"),
        Case("truncated-webp", "WebP cut in half", _upload(samples.truncated(good["webp_lossy"]),
             "a.webp", "image/webp"), 415, "unsupported-image"),
        Case("truncated-heic", "HEIC cut in half", _upload(samples.truncated(good["heic"]),
             "a.heic", "image/heic"), 415, "unsupported-image"),
        Case("truncated-avif", "AVIF cut in half", _upload(samples.truncated(good["avif"]),
             "a.avif", "image/avif"), 415, "unsupported-image"),
        Case("truncated-tiff", "TIFF cut in half", _upload(samples.truncated(good["tiff_lzw"]),
             "a.tif", "image/tiff"), 415, "unsupported-image"),
        Case("truncated-bmp", "BMP cut in half", _upload(samples.truncated(good["bmp_rgb"]),
             "a.bmp", "image/bmp"), 415, "unsupported-image"),
        Case("header-only-jpeg", "JPEG: the first 20 bytes only", _upload(jpeg[:20]),
             415, "unsupported-image"),
        Case("text-as-jpeg", "plain text named photo.jpg, sent as image/jpeg",
             _upload(b"this is not a penguin\n" * 40), 415, "unsupported-image"),
        Case("random-bytes", "64 kB of pseudo-random bytes",
             _upload(bytes((i * 7919 + 13) % 256 for i in range(65536))), 415,
             "unsupported-image"),
        Case("html", "an HTML page as the file", _upload(b"<html><body>hi</body></html>",
             "page.html", "text/html"), 415, "unsupported-image"),
        Case("pdf", "PDF document", _upload(samples.PDF, "doc.pdf", "application/pdf"),
             415, "unsupported-image"),
        Case("svg", "SVG drawing", _upload(samples.SVG, "d.svg", "image/svg+xml"),
             415, "unsupported-image"),
        Case("ico", "Windows icon (ICO), which Pillow can read",
             _upload(samples.ico(), "f.ico", "image/x-icon"), 415, "unsupported-image"),
        Case("psd", "Photoshop file (PSD), which Pillow can read",
             _upload(samples.psd(), "a.psd", "image/vnd.adobe.photoshop"), 415,
             "unsupported-image"),
        Case("ppm", "Netpbm PPM, which Pillow can read",
             _upload(samples.ppm(), "a.ppm", "image/x-portable-pixmap"), 415,
             "unsupported-image"),
        Case("png-pixel-bomb", "PNG header claiming 100,000 x 100,000 px (167 bytes)",
             _upload(samples.png_bomb(), "bomb.png", "image/png"), 413, "image-too-large"),
        Case("gif-pixel-bomb", "GIF header claiming 65,535 x 65,535 px",
             _upload(samples.gif_bomb(), "bomb.gif", "image/gif"), 413, "image-too-large"),
        Case("jpeg-pixel-bomb", "JPEG frame header claiming 65,500 x 65,500 px",
             _upload(samples.jpeg_bomb()), 413, "image-too-large"),
        Case("avif-pixel-bomb", "AVIF whose container claims 10,000 x 10,000 px "
             f"({len(samples.avif_bomb())} bytes)",
             _upload(samples.avif_bomb(), "bomb.avif", "image/avif"), 413, "image-too-large"),
        Case("png-zlib-bomb", f"complete 8,000 x 8,000 PNG (64 MP > {max_pixels / 1e6:g} MP) "
             "compressed to a few kB", _upload(samples.png_zlib_bomb(), "z.png", "image/png"),
             413, "image-too-large"),
        Case("oversized-upload", f"upload 1 MiB over MAX_UPLOAD_MB "
             f"({Settings().max_upload_mb:g} MB)", _upload(_oversized()), 413,
             "upload-too-large"),
        Case("wrong-field", "the image in a field named `image` instead of `file`",
             _upload(jpeg, field="image"), 400, "missing-file"),
        Case("two-files", "two `file` fields sent to /predict", _two_files(jpeg), 400,
             "too-many-files"),
        Case("raw-body", "the image as the raw body (Content-Type: image/jpeg), no multipart",
             _raw(jpeg, "image/jpeg"), 415, "unsupported-content-type"),
        Case("json-body", "a JSON body", _raw(b'{"file": "penguin.jpg"}', "application/json"),
             415, "unsupported-content-type"),
        Case("form-urlencoded", "an urlencoded form", _raw(b"file=penguin.jpg",
             "application/x-www-form-urlencoded"), 415, "unsupported-content-type"),
        Case("no-body", "POST with no body and no Content-Type", _raw(b"", None), 415,
             "unsupported-content-type"),
        Case("multipart-no-boundary", "multipart/form-data without a boundary",
             _raw(b"--x\r\n", "multipart/form-data"), 400, "missing-file"),
        Case("multipart-garbage", "multipart/form-data whose body is not multipart",
             _raw(b"garbage" * 100, f"multipart/form-data; boundary={boundary}"), 400,
             "missing-file"),
        Case("many-parts", "1,500 small form parts besides the image (Werkzeug reads at most "
             "1,000)", _many_parts(jpeg, 1500), 413, "too-many-parts"),
        Case("huge-header", "a 9 kB header line (Gunicorn's limit: 8,190 bytes)",
             _headers("/health", {"X-Filler": "y" * 9000}), 431, "headers-too-large"),
        Case("too-many-headers", "120 header fields (Gunicorn's limit: 100)",
             _headers("/health", {f"X-Filler-{i}": "y" for i in range(120)}), 431,
             "headers-too-large"),
        Case("huge-url", "a 5 kB URL (Gunicorn's request-line limit: 4,094 bytes)",
             _headers("/predict?q=" + "a" * 5000, {}), 414, "request-line-too-long"),
        Case("not-found", "GET /nope", _raw(b"", None, "/nope", "GET"), 404, "not-found"),
        Case("get-predict", "GET /predict", _raw(b"", None, "/predict", "GET"), 405,
             "method-not-allowed"),
        Case("delete-model", "DELETE /model", _raw(b"", None, "/model", "DELETE"), 405,
             "method-not-allowed"),
    ]  # fmt: skip


def markdown_table() -> str:
    """The "Bad input" table of docs/reliability.md (with the broken framings and request
    heads, sent raw)."""
    rows = ["| Input | Status | Problem `type` |", "|---|---|---|"]
    rows += [f"| {c.what} | {c.status} | `/problems/{c.problem}` |" for c in cases()]
    raw = framing.bad_cases() + framing.bad_head_cases()
    rows += [f"| {c.what} | {c.status} | `/problems/{c.problem}` |" for c in raw]
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
