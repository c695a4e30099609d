"""The upload page: `GET /` serves a plain HTML form plus one stylesheet and one small script.

Everything the page needs comes from this app (no CDN, no build step), so the page can carry
a Content-Security-Policy that allows only 'self': no inline script or style anywhere. The
script talks to the public API (`POST /predict`, `GET /model`) like any other client.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, render_template

from penguin_api.imaging import ACCEPTED_FORMATS_TEXT

# Static files live under /assets, not /static, so they never collide with the app's own
# static route.
bp = Blueprint(
    "web",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/assets",
)

#: Only this origin; nothing inline; no plugins; the page may not be framed (clickjacking).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; base-uri 'self'; form-action 'self'; "
    "object-src 'none'; frame-ancestors 'none'"
)

#: What the file picker offers; the server still decides what it accepts. The extensions
#: are for systems that do not map them to an image/* type.
ACCEPT_ATTRIBUTE = "image/*,.heic,.heif,.avif"


@bp.get("/")
def upload_page() -> str:
    """The page: pick or drop a photo, see the species or "no penguin found"."""
    return render_template(
        "upload.html",
        accept=ACCEPT_ATTRIBUTE,
        formats_text=ACCEPTED_FORMATS_TEXT,
        upload_limit=_upload_limit(),
        card=_model_card(),
    )


@bp.after_request
def _security_headers(response: Response) -> Response:
    """Lock the page and its static files to this origin and to their declared types."""
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Frame-Options"] = "DENY"
    return response


def _upload_limit() -> tuple[float, int] | None:
    """The upload limit the service enforces (MB as configured, bytes), to check before upload."""
    settings = getattr(_service(), "settings", None)
    if settings is None:
        return None
    return settings.max_upload_mb, settings.max_upload_bytes


def _model_card() -> Any:
    """This worker's model card once its model is loaded, else None.

    A worker loads its model in the background, so the page never waits for it; the
    script asks GET /model instead when the card is not known yet.
    """
    slot = getattr(_service(), "slot", None)
    classifier = getattr(slot, "classifier", None)
    return getattr(classifier, "card", None)


def _service() -> Any:
    """What create_app put in the app for the API (settings, model slot), if anything."""
    return current_app.extensions.get("penguin")
