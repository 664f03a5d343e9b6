"""``latent-engine explore``: a local web page with sliders along every stored direction.

The page lists the store's directions grouped by method with their metrics; a person picks up to
``MAX_MOVES`` of them, and one slider per direction (in σ units, with a layer range for w-sized directions)
moves a grid of the store's own samples; the generator runs here, batched, behind a small cache, and the
store's predictors re-score every edit. Two panels show two edits side by side; the grid downloads as PNG and
the codes as ``.npy`` (an ``.npz`` of codes and noise maps for a store holding per-image noise maps).

The store is opened read-only. The server binds 127.0.0.1 unless told otherwise, and refuses any other address
without ``allow_remote``: the page renders whatever the store holds, for anyone who can reach it.

    engine/explore/query.py     what a request may ask for, checked (limits, 4xx errors)
    engine/explore/session.py   the Explorer: store, models, directions, σ, moves, the cached panels
    engine/explore/render.py    batched synthesis and scoring, PNG grids, the LRU cache
    engine/explore/server.py    the Flask application: static page and JSON API
    engine/explore/hosts.py     which host names mean this machine (bind address, Host header)
    engine/explore/static/      index.html, app.js, style.css (shipped in the package, nothing from a CDN)
"""
from __future__ import annotations

import errno
import os
from collections.abc import Callable
from typing import Any

from engine.explore.hosts import is_loopback
from engine.explore.query import MAX_MOVES, MAX_PANELS, MAX_SAMPLES, RequestError
from engine.explore.session import Explorer

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765


def check_host(host: str, allow_remote: bool = False) -> str:
    """``host`` if the server may bind it: loopback always, any other address only with ``allow_remote``."""
    if not isinstance(host, str) or not host.strip():
        raise ValueError(f"host must be an address to bind, e.g. 127.0.0.1; got {host!r}")
    if not is_loopback(host) and not allow_remote:
        raise ValueError(f"host {host} would let other machines open the explorer; pass allow_remote=True "
                         "(--allow-remote) to serve beyond this machine")
    return host


def check_port(port: int) -> int:
    """``port`` in 0-65535 (0: any free port)."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be an integer from 0 to 65535; got {port!r}")
    return port


def serve(store: str | os.PathLike, *, generator: str | None = None, host: str = DEFAULT_HOST,
          port: int = DEFAULT_PORT, device: str = "cpu", allow_remote: bool = False, threads: int = 4,
          on_ready: Callable[[str], Any] | None = None, direction_from: str | os.PathLike | None = None) -> None:
    """Serve the explorer of ``store`` until interrupted; ``on_ready(url)`` is called once it listens.

    The models load on a thread while the server already answers, so the page shows their progress.
    ``generator`` defaults to the SPEC the store was sampled with. ``direction_from`` (another store of the same
    generator, e.g. a sampled one for an inverted ``store``) supplies the directions, their σ and predictors, as
    ``edit(..., direction_from=)`` does. Without ``allow_remote`` only requests addressed to a loopback host
    name are answered.
    """
    from waitress import create_server

    from engine.explore.server import create_app

    check_host(host, allow_remote)
    check_port(port)
    explorer = Explorer(str(store), generator, device, direction_from=direction_from)
    try:
        server = create_server(create_app(explorer, allow_remote), host=host, port=port, threads=threads, ident="latent-engine")
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise ValueError(f"port {port} on {host} is in use; choose another port (--port), or 0 for any free "
                             "one") from None
        raise
    explorer.start()
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{server.effective_port}/"
    if on_ready is not None:
        on_ready(url)
    try:
        server.run()
    finally:
        server.close()


__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "Explorer", "MAX_MOVES", "MAX_PANELS", "MAX_SAMPLES", "RequestError",
           "check_host", "check_port", "is_loopback", "serve"]
