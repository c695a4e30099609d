"""Tell when an HTTP/1.x request has arrived whole, from its bytes as they come in.

The worker (penguin_api.worker) holds each connection in its event loop and feeds what
it reads to a RequestBuffer; only once the buffer says the request is complete does a
thread take it. This module only frames requests (where the head ends, how long the
body is); Gunicorn parses and validates them afterwards. A transfer coding or chunked
body that cannot be read (penguin_api.chunked judges them) is refused: the worker answers
it with the buffer's `refusal`. Where the head is in other doubt (conflicting lengths, a
head past Gunicorn's limits, lines ended by bare LFs) the buffer says "hand over" at once,
and Gunicorn answers the request as it would have. It knows nothing of sockets, Gunicorn or Flask.
"""

from __future__ import annotations

import enum
import re

from penguin_api.chunked import DEFAULT_MAX_LINE, ChunkedBody, Refusal, transfer_coding_refusal

#: A request head larger than this is past any of Gunicorn's default limits (request line
#: 4,094 bytes, 100 fields of 8,190 bytes): Gunicorn refuses it from what is buffered.
DEFAULT_MAX_HEAD = 4094 + 2 + 100 * (8190 + 2) + 2
#: A chunked body may carry this much framing (size lines and CRLFs) besides its data: at
#: most ~100,000 chunks, about half a second of the loop's time. A client sending 8 KiB
#: chunks of a 32 MB upload uses 32 KiB of it; one-byte chunks would hold a worker for
#: seconds, the data itself ending far below the upload limit.
_FRAMING_BUDGET = 512 << 10
_BARE_LF = re.compile(rb"(?<!\r)\n")
_CONTINUE_LINE = re.compile(rb"\r\nexpect[ \t]*:[ \t]*100-continue[ \t]*(?=\r\n)", re.IGNORECASE)


class Verdict(enum.Enum):
    """What the worker should do with a connection after feeding it bytes."""

    MORE = "more"  # keep reading
    COMPLETE = "complete"  # the whole request is buffered
    TOO_LARGE = "too-large"  # the declared body is over the limit: hand over the head only
    HAND_OVER = "hand-over"  # framing the worker should not judge: hand over what is here
    REFUSE = "refuse"  # framing that cannot be read: answer with `refusal`, not the app


class RequestBuffer:
    """The bytes of one request, and whether they are all there yet."""

    def __init__(
        self, max_body: int, max_head: int = DEFAULT_MAX_HEAD, max_line: int = DEFAULT_MAX_LINE
    ) -> None:
        self.max_body = max_body
        self.max_head = max_head
        self.max_line = max_line  # a header field's limit bounds a chunk line or trailer field
        #: Why the request is refused, once feed() or end_of_input() said REFUSE.
        self.refusal: Refusal | None = None
        self.data = bytearray()
        #: Set when the client waits for "100 Continue" before sending its body; the
        #: worker sends it once and clears the flag (the Expect line is then removed,
        #: so that Gunicorn does not send a second one).
        self.continue_due = False
        self._head_end: int | None = None  # index just past the blank line
        self._body_end: int | None = None  # index just past the body, when known
        self._chunked: ChunkedBody | None = None
        self._searched = 0

    @property
    def head_received(self) -> bool:
        """True once the request line and headers are all in."""
        return self._head_end is not None

    def feed(self, chunk: bytes) -> Verdict:
        """Add bytes read from the connection; say whether the request is complete."""
        self.data += chunk
        if self._head_end is None:
            start = max(0, self._searched - 3)
            end = self.data.find(b"\r\n\r\n", start)
            if end < 0:
                self._searched = len(self.data)
                # A line ended by a bare LF: Gunicorn refuses the request (400) from it, so
                # it goes there at once, not after the client has waited for a 408.
                bare_lf = _BARE_LF.search(self.data, start) is not None
                too_long = len(self.data) > self.max_head
                return Verdict.HAND_OVER if too_long or bare_lf else Verdict.MORE
            verdict = self._read_head(end + 4)
            if verdict is not None:
                return verdict
        if self._chunked is not None:
            return self._scan_chunks()
        assert self._body_end is not None
        return Verdict.COMPLETE if len(self.data) >= self._body_end else Verdict.MORE

    def end_of_input(self) -> Verdict:
        """The client stopped sending: COMPLETE (the app judges a cut body), or REFUSE."""
        if self._chunked is not None and not self._chunked.complete:
            return self._refuse(self._chunked.ended_early())
        return Verdict.COMPLETE

    def _refuse(self, refusal: Refusal) -> Verdict:
        self.refusal = refusal
        return Verdict.REFUSE

    def _read_head(self, head_end: int) -> Verdict | None:
        """Find the body's framing from the head; a verdict if it settles the request."""
        if head_end > self.max_head:
            return Verdict.HAND_OVER
        lines = bytes(self.data[: head_end - 4]).split(b"\r\n")
        request_line = lines[0]
        lengths: set[bytes] = set()
        codings: list[bytes] = []  # the Transfer-Encoding values, as sent
        expects_continue = False
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                return Verdict.HAND_OVER
            name, value = name.strip().lower(), value.strip()
            if name == b"content-length":
                lengths.add(value)
            elif name == b"transfer-encoding":
                codings.append(value)
            elif name == b"expect" and value.lower() == b"100-continue":
                expects_continue = True
        # HTTP/1.0 has no 100-continue (Gunicorn ignores it there, and so do we).
        expects_continue = expects_continue and request_line.endswith(b"HTTP/1.1")
        self._head_end = head_end
        chunked = bool(codings)
        if chunked:
            refusal = transfer_coding_refusal(
                codings, has_length=bool(lengths), http_1_0=request_line.endswith(b"HTTP/1.0")
            )
            if refusal is not None:
                return self._refuse(refusal)
        elif lengths:
            length = lengths.pop()
            if lengths or not length.isdigit() or len(length) > 18:
                return Verdict.HAND_OVER  # two different lengths, or not a number
            if int(length) > self.max_body:
                self._drop_expect()
                return Verdict.TOO_LARGE
            self._body_end = head_end + int(length)
        else:
            self._body_end = head_end  # a request without either has no body
        body_expected = chunked or self._body_end != head_end
        if expects_continue and body_expected:
            self._drop_expect()
            # Only a client that has sent nothing of its body yet is waiting for the 100.
            self.continue_due = len(self.data) == self._head_end
        if chunked:
            self._chunked = ChunkedBody(self._head_end, self.max_body, self.max_line)
        return None

    def _drop_expect(self) -> None:
        """Remove the Expect: 100-continue line: the worker answers it, or refuses early."""
        assert self._head_end is not None
        head = bytes(self.data[: self._head_end])
        trimmed = _CONTINUE_LINE.sub(b"", head)
        if trimmed != head:
            self.data[: self._head_end] = trimmed
            shift = len(head) - len(trimmed)
            self._head_end -= shift
            if self._body_end is not None:
                self._body_end -= shift

    def _scan_chunks(self) -> Verdict:
        """Walk the chunked body as far as it has arrived; COMPLETE after its trailer."""
        assert self._chunked is not None and self._head_end is not None
        refusal = self._chunked.scan(self.data)
        if refusal is not None:
            return self._refuse(refusal)
        if self._chunked.complete:
            return Verdict.COMPLETE
        if len(self.data) - self._head_end - self._chunked.received > _FRAMING_BUDGET:
            return self._refuse(
                Refusal(
                    413,
                    "upload-too-large",
                    f"The chunked body spends over {_FRAMING_BUDGET >> 10} KiB on chunk "
                    "framing (chunks of a few bytes); send it in larger chunks.",
                )
            )
        return Verdict.MORE
