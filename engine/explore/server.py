"""The explorer's web application (Flask): the page's static files and a small JSON API over an ``Explorer``.

    GET  /                    the page (static/index.html)
    GET  /static/<file>       app.js, style.css: only files of the package's static folder
    GET  /api/status          loading progress: stage, done/total, ready, error
    GET  /api/store           the store: path, rows, spaces, models, inverted codes, the request limits
    GET  /api/directions      directions grouped by method, with their metrics
    POST /api/render          a render request (``engine.explore.query``) -> PNG grids, scores, σ, rows
    POST /api/codes?panel=I   the same request -> panel I's synthesis input codes as a .npy file (.npz of
                              "codes" and "noise/<layer>" maps for a store holding per-image noise maps)

Every response carries a ``Server-Timing: app;dur=MS`` header, the time the server spent on it. Every refusal
is JSON ``{"error": message}`` with a 4xx status (a 503 while the generator loads); a bug is a 500 with a
one-line message, and the server keeps serving. Unless ``allow_remote``, a request whose ``Host`` header does
not name this machine (127.0.0.1, localhost, [::1], with or without the port) is refused with a 403: a web
page elsewhere cannot reach the explorer by rebinding its own name to 127.0.0.1 (DNS rebinding).
"""
from __future__ import annotations

import io
import logging
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
from flask import Flask, Response, g, jsonify, request, send_from_directory
from werkzeug.exceptions import HTTPException

from engine.explore.hosts import is_loopback
from engine.explore.query import RenderRequest, RequestError, parse_render
from engine.explore.render import data_url
from engine.explore.session import Explorer

STATIC = Path(__file__).resolve().parent / "static"
MAX_BODY = 64 * 1024            # bytes of a request body: a render request is a few hundred
_PANEL = re.compile(r"[0-9]{1,3}")
_HOST = re.compile(r"(\[[^\]]*\]|[^:\[\]]*)(?::[0-9]{1,5})?")

log = logging.getLogger("engine.explore")


def create_app(explorer: Explorer, allow_remote: bool = False) -> Flask:
    """The Flask application serving ``explorer`` (which may still be loading its models); without
    ``allow_remote`` it answers only requests addressed to a loopback host name."""
    app = Flask("engine.explore", static_folder=str(STATIC), static_url_path="/static")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.json.sort_keys = False

    @app.before_request
    def started() -> None:
        g.started = time.perf_counter()
        if not allow_remote and not loopback_host_header(request.headers.get("Host", "")):
            raise RequestError(f"Host {request.headers.get('Host', '')!r} is not this machine: the explorer answers "
                               "requests to 127.0.0.1, localhost or [::1] only (serve with --allow-remote to "
                               "answer others)", 403)

    @app.after_request
    def timed(response: Response) -> Response:
        if "started" in g:           # the server's own time, as browsers' developer tools show it
            response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - g.started) * 1000:.2f}"
        return response

    @app.get("/")
    def index() -> Response:
        return send_from_directory(STATIC, "index.html")

    @app.get("/favicon.ico")
    def favicon() -> Response:
        return Response(status=204)

    @app.get("/api/status")
    def status() -> Response:
        return jsonify(explorer.state.as_json())

    @app.get("/api/store")
    def store() -> Response:
        return jsonify(explorer.describe())

    @app.get("/api/directions")
    def directions() -> Response:
        return jsonify(explorer.directions())

    @app.post("/api/render")
    def render() -> Response:
        parsed = _render_request(explorer)
        return jsonify(_render_json(explorer, parsed, explorer.render(parsed)))

    @app.post("/api/codes")
    def codes() -> Response:
        parsed = _render_request(explorer)
        panel = request.args.get("panel", "0")
        if _PANEL.fullmatch(panel) is None or int(panel) >= len(parsed.panels):
            raise RequestError(f"panel must be an index from 0 to {len(parsed.panels) - 1}; got {panel!r}")
        result = explorer.render(parsed)
        codes, maps = result["panels"][int(panel)].codes, result["base"].noise
        buffer = io.BytesIO()
        if maps is None:
            np.save(buffer, codes)
            name = f"codes_panel{panel}.npy"
        else:                      # an inverted store's codes re-generate its images only with their noise maps
            layers = [layer for layer, _ in explorer.store.noise_layers()]
            np.savez(buffer, codes=codes, **{f"noise/{layer}": m.cpu().numpy() for layer, m in zip(layers, maps)})
            name = f"codes_panel{panel}.npz"
        return Response(buffer.getvalue(), mimetype="application/octet-stream",
                        headers={"Content-Disposition": f"attachment; filename={name}"})

    @app.errorhandler(RequestError)
    def refused(exc: RequestError) -> tuple[Response, int]:
        return jsonify(error=str(exc)), exc.status

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> tuple[Response, int]:
        return jsonify(error=f"{exc.name}: {exc.description}"), exc.code or 500

    @app.errorhandler(Exception)
    def bug(exc: Exception) -> tuple[Response, int]:
        log.exception("explore: unexpected error")
        return jsonify(error=f"a bug in latent-engine explore ({type(exc).__name__}: {exc})"), 500

    return app


def loopback_host_header(value: str) -> bool:
    """Whether a ``Host`` header names this machine: a loopback name or address, with an optional port."""
    match = _HOST.fullmatch(value.strip())
    if match is None or not match.group(1):
        return False
    host = match.group(1)
    return is_loopback(host)


def _render_request(explorer: Explorer) -> Any:
    payload = request.get_json(silent=True)
    if payload is None:
        raise RequestError("the request body must be JSON (Content-Type: application/json)")
    return parse_render(payload, explorer.store.n, explorer.direction_rows)


def _render_json(explorer: Explorer, parsed: RenderRequest, result: dict[str, Any]) -> dict[str, Any]:
    rows, base = result["rows"], result["base"]
    panels = [{"image": data_url(panel.png), "scores": explorer.score_change(base, panel)}
              for panel in result["panels"]]
    targets = explorer.targets_png(rows)
    return {"rows": rows.tolist(), "original": data_url(base.png), "panels": panels,
            "targets": None if targets is None else data_url(targets),
            "inversion_error": explorer.inversion_error(rows),
            "sigma": {m.label: explorer.sigma(m.key, m.row) for moves in parsed.panels for m in moves}}


__all__ = ["STATIC", "create_app", "loopback_host_header"]
