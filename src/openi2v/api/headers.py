"""The security headers the API sends with pages and files.

User files (/media/..., /files/...) share the playground's origin, where the API key lives in
localStorage: they are served so they can never run as a page there. The playground gets a strict
CSP of its own: its script and style from /web/ only, nothing inline, nothing evaluated.
"""

from __future__ import annotations

from urllib.parse import urlsplit

# A download (anything but the media we accept): were a browser to render it, nothing may load or run.
DOWNLOAD_CSP = "default-src 'none'; sandbox"
# Media shown inline: the browser's own viewer reloads the file into an <img> or <video> (by Range, from
# the file's own origin, hence allow-same-origin: with no allow-scripts nothing can use that origin)
# and styles itself inline. Still no script, plugin, form or navigation.
MEDIA_CSP = "default-src 'none'; img-src 'self'; media-src 'self'; style-src 'unsafe-inline'; sandbox allow-same-origin"


def user_file(media: bool) -> dict[str, str]:
    """Headers for a user file: never sniffed past the type we declare, always sandboxed."""
    return {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": MEDIA_CSP if media else DOWNLOAD_CSP}


def playground(public_url: str = "", files_origin: str | None = None) -> dict[str, str]:
    """The playground's headers. Outputs are absolute URLs under ``public_url`` when it is set, or in
    a bucket (``files_origin``), either of which may be another origin than the one the page was
    opened from: its videos may load from there too."""
    media = " ".join(["'self'", *_origin(public_url), *_origin(files_origin or "")])
    policy = {
        "default-src": "'none'",
        "script-src": "'self'",
        "style-src": "'self'",
        "img-src": f"{media} data: blob:",  # data: the empty favicon; blob: the preview of a picked photo
        "media-src": media,  # the output video
        "connect-src": "'self'",  # the API
        "object-src": "'none'",
        "base-uri": "'none'",
        "form-action": "'self'",
        "frame-ancestors": "'none'",
    }
    return {
        "Content-Security-Policy": "; ".join(f"{k} {v}" for k, v in policy.items()),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }


def _origin(url: str) -> list[str]:
    parts = urlsplit(url)
    return [f"{parts.scheme}://{parts.netloc}"] if parts.scheme and parts.netloc else []
