"""Judge a request's transfer coding and its chunked body as the bytes arrive (RFC 9112).

The worker's event loop (through penguin_api.request_buffer) walks every chunked body
here before Gunicorn reads it. Gunicorn's own reader raises in the middle of the
application when it meets bad framing, which the client saw as a 500; so anything it
would refuse is refused here first, with the status and a detail that says what was
wrong: these rules are Gunicorn's (RFC 9112 sections 6 and 7.1), or stricter. It knows
nothing of sockets, Gunicorn or Flask.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: Gunicorn's default limits, which bound a chunk-size line and the trailer section too.
DEFAULT_MAX_LINE = 8190
DEFAULT_MAX_FIELDS = 100
DEFAULT_MAX_TRAILER = 8190 * 32

_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED = rb'"(?:[\t !#-\[\]-~\x80-\xff]|\\[\t -~\x80-\xff])*"'
_EXTENSION_VALUE = rb"(?:" + _TOKEN + rb"|" + _QUOTED + rb")"
#: chunk-ext = *( BWS ";" BWS name [ BWS "=" BWS value ] ), as it follows the size.
_EXTENSIONS = re.compile(
    rb"(?:[ \t]*;[ \t]*" + _TOKEN + rb"(?:[ \t]*=[ \t]*" + _EXTENSION_VALUE + rb")?)*"
)
_HEX = re.compile(rb"[0-9A-Fa-f]+")
_NAME = re.compile(_TOKEN)
_BAD_VALUE_BYTE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
#: Fields that change framing, routing or credentials may not come after the body.
_FORBIDDEN_TRAILERS = frozenset(
    {b"host", b"content-length", b"transfer-encoding", b"trailer", b"authorization", b"te"}
)
#: Hex digits (leading zeros aside) past which a chunk size is over any upload limit.
_MAX_SIZE_DIGITS = 15


@dataclass(frozen=True)
class Refusal:
    """A request answered before the application sees it: status, problem slug, detail."""

    status: int
    problem: str
    detail: str


def bad_framing(detail: str) -> Refusal:
    """400: the body's framing cannot be read."""
    return Refusal(400, "bad-framing", detail)


_SHOWN = {ord("\r"): "\\r", ord("\n"): "\\n", ord("\t"): "\\t"}


def shown(data: bytes, limit: int = 40) -> str:
    """A few bytes of what the client sent, printable, for a detail."""
    text = "".join(
        _SHOWN.get(b) or (chr(b) if 32 <= b < 127 else f"\\x{b:02x}") for b in data[:limit]
    )
    return f"'{text}'" + ("..." if len(data) > limit else "")


def transfer_coding_refusal(
    values: list[bytes], *, has_length: bool, http_1_0: bool
) -> Refusal | None:
    """Why a request with these Transfer-Encoding values cannot be read, or None: plain chunked.

    Chunked must be the last coding, once (else the body's end cannot be found: 400, RFC
    9112 6.3); a coding before it is one this server does not decode (501, RFC 9112 6.1).
    """
    header = b", ".join(values)
    if has_length:
        return bad_framing(
            "The request has both Content-Length and Transfer-Encoding; a request must say "
            "how its body is framed in one way only (RFC 9112 section 6.3). Send one of them."
        )
    if http_1_0:
        return Refusal(
            411,
            "length-required",
            "HTTP/1.0 has no Transfer-Encoding, so its body needs a Content-Length (or send "
            "the request as HTTP/1.1).",
        )
    codings = [c.strip(b" \t").lower() for value in values for c in value.split(b",")]
    for coding in codings:
        if not _NAME.fullmatch(coding):
            return bad_framing(
                f"Transfer-Encoding: {shown(header)} is not a list of transfer codings "
                f"({shown(coding)} is not one)."
            )
    if codings[-1] != b"chunked" or codings.count(b"chunked") > 1:
        return bad_framing(
            f"Transfer-Encoding: {shown(header)} does not end in a single 'chunked', so the "
            "end of the body cannot be found (RFC 9112 section 6.3). Send the body with "
            "Content-Length or as 'Transfer-Encoding: chunked'."
        )
    others = ", ".join(c.decode() for c in codings[:-1])
    if others:
        return Refusal(
            501,
            "unsupported-transfer-coding",
            f"This server decodes no transfer coding but chunked (the request used {others}). "
            "Send the photo as it is, with Content-Length or 'Transfer-Encoding: chunked'.",
        )
    return None


class ChunkedBody:
    """Where a chunked body stands as its bytes arrive: complete, still coming, or refused.

    Positions are indices into the request's bytes (the body begins at `start`).
    """

    def __init__(
        self,
        start: int,
        max_body: int,
        max_line: int = DEFAULT_MAX_LINE,
        max_fields: int = DEFAULT_MAX_FIELDS,
        max_trailer: int = DEFAULT_MAX_TRAILER,
    ) -> None:
        self.start = start
        self.max_body = max_body
        self.max_line = max_line
        self.max_fields = max_fields
        self.max_trailer = max_trailer
        self.received = 0  # chunk data (the body without its framing) declared so far
        self.complete = False
        self._pos = start  # the next chunk-size line, CRLF after chunk data, or trailer
        self._data_end: int | None = None  # end of the current chunk's data, while in it
        self._in_trailer = False

    def scan(self, data: bytes | bytearray) -> Refusal | None:
        """Walk the body as far as it has arrived; a Refusal when its framing is wrong."""
        while not self.complete:
            if self._data_end is not None:
                refusal, waiting = self._after_data(data)
            elif self._in_trailer:
                refusal, waiting = self._trailer(data)
            else:
                refusal, waiting = self._size_line(data)
            if refusal is not None:
                return refusal
            if waiting:
                break
        return None

    def ended_early(self) -> Refusal:
        """The client stopped sending before the body's last chunk (or its trailer) came."""
        where = "its trailer section" if self._in_trailer else "its last, zero-size chunk"
        return bad_framing(
            f"The chunked body ended before {where}: the client closed its side after "
            f"{self.received:,} bytes of chunk data. Send the whole body, ending in "
            "'0\\r\\n\\r\\n'."
        )

    def _size_line(self, data: bytes | bytearray) -> tuple[Refusal | None, bool]:
        pos = self._pos
        end = data.find(b"\r\n", pos)
        line = bytes(data[pos : end if end >= 0 else len(data)])
        if end < 0:  # the line is still arriving: refuse what can never become one
            if len(line) > self.max_line or b"\n" in line:
                return self._bad_size_line(line), False
            size_part = line.partition(b";")[0].rstrip(b" \t\r")
            if size_part and not _HEX.fullmatch(size_part):
                return self._bad_size_line(line), False
            return None, True
        size_text, semicolon, extensions = line.partition(b";")
        if semicolon:
            size_text = size_text.rstrip(b" \t")  # whitespace before extensions only
        if len(line) > self.max_line or not _HEX.fullmatch(size_text):
            return self._bad_size_line(line), False
        if semicolon and (b"\r" in extensions or not _EXTENSIONS.fullmatch(b";" + extensions)):
            return bad_framing(
                f"The chunk extension {shown(b';' + extensions)} is malformed: an extension "
                "is ';name' or ';name=value', the value a token or a quoted string."
            ), False
        if len(size_text.lstrip(b"0")) > _MAX_SIZE_DIGITS:
            return self._too_large(f"a chunk of {shown(size_text)} (hex) bytes"), False
        size = int(size_text, 16)
        self._pos = end + 2
        if size == 0:
            self._in_trailer = True
            return None, False
        self.received += size
        if self.received > self.max_body:
            return self._too_large(f"{self.received:,} bytes of chunks"), False
        self._data_end = self._pos + size
        return None, False

    def _after_data(self, data: bytes | bytearray) -> tuple[Refusal | None, bool]:
        assert self._data_end is not None
        end = self._data_end
        after = bytes(data[end : end + 2])
        if after != b"\r\n"[: len(after)]:
            return bad_framing(
                f"A chunk's data is not followed by CRLF (got {shown(after)} after "
                f"{self.received:,} bytes of chunk data): the chunk size does not match its data."
            ), False
        if len(after) < 2:
            return None, True
        self._pos, self._data_end = end + 2, None
        return None, False

    def _trailer(self, data: bytes | bytearray) -> tuple[Refusal | None, bool]:
        pos = self._pos
        if data[pos : pos + 2] == b"\r\n":
            self.complete = True
            return None, False
        end = data.find(b"\r\n\r\n", pos)
        section = bytes(data[pos : end if end >= 0 else len(data)])
        if len(section) > self.max_trailer:
            return bad_framing(
                f"The trailer section after the last chunk is over {self.max_trailer:,} bytes."
            ), False
        if end < 0:
            if section.count(b"\n") != section.count(b"\r\n"):
                return bad_framing("A trailer line ends in a bare LF; lines end in CRLF."), False
            return None, True
        refusal = self._check_trailer_fields(section.split(b"\r\n"))
        if refusal is None:
            self.complete = True
        return refusal, False

    def _check_trailer_fields(self, lines: list[bytes]) -> Refusal | None:
        if len(lines) > self.max_fields:
            return bad_framing(f"The trailer has more than {self.max_fields} fields.")
        for line in lines:
            name, colon, value = line.partition(b":")
            if not colon or not _NAME.fullmatch(name):
                return bad_framing(
                    f"The trailer line {shown(line)} is not a field ('Name: value')."
                )
            if name.lower() in _FORBIDDEN_TRAILERS:
                return bad_framing(
                    f"{name.decode()} may not be sent in a trailer (RFC 9110 section 6.5.1)."
                )
            if _BAD_VALUE_BYTE.search(value) or len(line) + 2 > self.max_line:
                return bad_framing(f"The trailer field {name.decode()} has a malformed value.")
        return None

    def _bad_size_line(self, line: bytes) -> Refusal:
        if len(line) > self.max_line:
            return bad_framing(
                f"A chunk-size line (with its extensions) is over {self.max_line:,} bytes."
            )
        return bad_framing(
            f"The chunk-size line {shown(line)} is not a hexadecimal chunk size (optionally "
            "followed by ';' extensions) ending in CRLF."
        )

    def _too_large(self, what: str) -> Refusal:
        return Refusal(
            413,
            "upload-too-large",
            f"The chunked body declares {what}, over the {self.max_body / 1048576:g} MB "
            "upload limit.",
        )
