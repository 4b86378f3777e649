"""Downloads: streaming a remote scene to a local file, with retries and a sha256 check.

The body is streamed in 1 MiB chunks to a temporary file beside the destination while it is
hashed; the file is moved into place only when the hash matches the expected one, so a failed or
tampered download never leaves a file where a good one is expected. Connection errors, timeouts
and 5xx/429 responses are retried with exponential backoff; other 4xx responses fail at once.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import time
import urllib.error
import urllib.request
from pathlib import Path

from satpipe.core.errors import ChecksumError, DownloadError
from satpipe.core.files import atomic_path

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
_RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


def _fetch_once(url: str, dest: Path, timeout: float) -> str:
    request = urllib.request.Request(url, headers={"User-Agent": "satpipe"})
    digest = hashlib.sha256()
    with urllib.request.urlopen(request, timeout=timeout) as response, dest.open("wb") as fh:
        expected_length = response.headers.get("Content-Length")
        received = 0
        while chunk := response.read(_CHUNK):
            digest.update(chunk)
            fh.write(chunk)
            received += len(chunk)
    if expected_length is not None and received != int(expected_length):
        # Caught by download(), which names the URL once in its own message.
        raise DownloadError(f"connection closed after {received} of {expected_length} bytes")
    return digest.hexdigest()


def download(
    url: str,
    dest: Path | str,
    *,
    sha256: str,
    retries: int = 3,
    timeout: float = 30.0,
    backoff: float = 0.5,
) -> None:
    """Download ``url`` to ``dest``, verifying its sha256 before it appears there.

    Args:
        url: an http(s) URL.
        dest: where the verified file goes.
        sha256: the expected hex digest (mandatory: downloads are always verified).
        retries: how many times a retryable failure is tried again.
        timeout: socket timeout in seconds for each attempt.
        backoff: first wait between attempts, doubled each time.

    Raises:
        DownloadError: the server refused, or every attempt failed.
        ChecksumError: the bytes received do not have the expected sha256.
    """
    dest = Path(dest)
    attempts = retries + 1
    last = ""
    for attempt in range(1, attempts + 1):
        try:
            with atomic_path(dest, suffix=".part") as tmp:
                got = _fetch_once(url, tmp, timeout)
                if got != sha256.lower():
                    raise ChecksumError(
                        f"{url}: sha256 of the download is {got}; expected {sha256.lower()} "
                        "(ingest.sha256)"
                    )
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code} {exc.reason}"
            if exc.code not in _RETRYABLE_STATUS:
                raise DownloadError(f"{url}: server answered {last}") from exc
        except (
            urllib.error.URLError,
            http.client.HTTPException,
            TimeoutError,
            OSError,
            DownloadError,
        ) as exc:
            last = str(getattr(exc, "reason", None) or exc)
        else:
            log.info("downloaded %s (sha256 verified)", url)
            return
        if attempt < attempts:
            wait = backoff * 2 ** (attempt - 1)
            log.warning(
                "download attempt %d/%d failed (%s); retrying in %.1fs",
                attempt,
                attempts,
                last,
                wait,
            )
            time.sleep(wait)
    raise DownloadError(f"{url}: download failed after {attempts} attempts (last error: {last})")
