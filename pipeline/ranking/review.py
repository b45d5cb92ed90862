"""`aiimg review`: a private page on 127.0.0.1 to browse drafts by score and seed them.

Never part of ``output/``: it serves the content folder's drafts directly. Routes::

    GET  /                     the page (review.html; all draft text is inserted as text, never HTML)
    GET  /api/drafts           {"version", "drafts": [{id, day, created, score, flags, seeded, ...}]}
    GET  /api/version          a token that changes when drafts, markers or scores change
    GET  /thumb/<id>           a 360 px JPEG of a known draft (made in memory, cached)
    GET  /image/<id>           the draft's PNG
    POST /api/seed/<id>        write seed.txt (as a file manager would)
    POST /api/unseed/<id>      remove it, unless its variations have started
    POST /api/seen             {"ids": [...]}: drafts the page showed (steering.py's impressions)

Ids come from HTTP: they must pass ``check_id`` and name an existing draft, so no path is built
from anything else. Requests must carry a Host of 127.0.0.1/localhost (no DNS rebinding) and
POSTs the header ``X-Aiimg-Review: 1`` (another site's page cannot send it without a CORS
preflight, which this server never grants). Scores are recombined over all listed drafts.
A background thread scores drafts that no loop scored (older than ``SCORE_AFTER`` seconds).
"""

from __future__ import annotations

import io
import json
import logging
import math
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from pipeline import markers, steering
from pipeline.content import Content, check_id
from pipeline.errors import AiimgError
from pipeline.ranking import store
from pipeline.ranking.scorers import combine

log = logging.getLogger("aiimg.ranking")
PAGE = Path(__file__).with_name("review.html")
THUMB = 360
SCORE_AFTER = 10.0  # seconds: give the loop's own ranker the first go at a new draft
SUB_SHOWN = ("sharpness", "noise", "placement", "subject_size", "frame_cut", "technical", "composition")
MAX_BODY = 256 * 1024  # a batch of impressions: ~10,000 ids; anything bigger is not from the page


class Review:
    """What the server does, without HTTP: listing, thumbnails, seeding."""

    def __init__(self, cfg, content: Content | None = None):
        self.cfg = cfg
        self.content = content or Content(cfg.content_dir)
        self._thumbs: dict = {}
        self._lock = threading.Lock()

    def version(self) -> str:
        """Changes when a draft appears, a marker or draft.json changes, or a work folder appears."""
        stamps = [str(_mtime(self.content.works_dir))]
        for d in self.content.drafts():
            try:
                stamps.append(f"{d.id}:{d.folder.stat().st_mtime_ns}:{d.recipe_path.stat().st_mtime_ns}")
            except OSError:
                continue
        return f"{len(stamps)}-{hash(tuple(stamps)) & 0xFFFFFFFF:08x}"

    def listing(self) -> dict:
        entries = store.entries(self.content)
        combined = combine([e.raw() for e in entries], self.cfg.score.weights)
        seen = steering.seen_ids(entries, self._impressions())
        return {
            "version": self.version(),
            "drafts": [self.card(e, s, e.draft.id in seen) for e, s in zip(entries, combined)],
        }

    def _impressions(self) -> dict:
        try:
            return steering.read_impressions(self.content)
        except AiimgError as exc:  # the page still lists and seeds; only the "seen" marks are lost
            log.warning("%s", exc)
            return {}

    def card(self, e: store.Entry, score: float, seen: bool = False) -> dict:
        sub = (e.scores.get("scorers", {}).get("default") or {}).get("sub", {})
        return {
            "id": e.draft.id,
            "day": e.draft.folder.parent.name,
            "created": e.recipe.get("created", ""),
            "score": None if math.isnan(score) or not e.scores else round(score, 4),
            "scored": bool(e.scores),
            "flags": e.scores.get("flags", []),
            "duplicate_of": e.scores.get("duplicate_of"),
            "seeded": e.seeded,
            "auto": e.auto,
            "seen": seen,
            "started": self.started(e.draft.id),
            "prompt": e.recipe.get("prompt", ""),
            "width": e.recipe.get("width"),
            "height": e.recipe.get("height"),
            "sub": {k: sub[k] for k in SUB_SHOWN if k in sub},
            "scorers": {n: r.get("score") for n, r in e.results.items()},
        }

    def started(self, draft_id: str) -> bool:
        """Variations of this draft exist or are under way (unseeding can no longer cancel them)."""
        try:
            return bool(self.content.read_work(draft_id).variations)
        except AiimgError:
            return True

    def known(self, draft_id: str):
        """The draft for an id from HTTP, or None: valid id and an existing draft only."""
        try:
            draft = self.content.draft(check_id(draft_id))
        except AiimgError:
            return None
        return draft if draft.recipe_path.is_file() else None

    def seed(self, draft_id: str) -> tuple[int, dict]:
        draft = self.known(draft_id)
        if draft is None:
            return _no_such(draft_id)
        if markers.find(draft.folder):
            return HTTPStatus.CONFLICT, {"error": "already seeded"}
        path = self.content.write_marker(draft.id, "")
        return HTTPStatus.OK, {"seeded": True, "marker": str(path)}

    def unseed(self, draft_id: str) -> tuple[int, dict]:
        draft = self.known(draft_id)
        if draft is None:
            return _no_such(draft_id)
        marker = markers.find(draft.folder)
        if marker is None:
            return HTTPStatus.CONFLICT, {"error": "not seeded"}
        if self.started(draft.id):
            return HTTPStatus.CONFLICT, {"error": "its variations have started; delete them in works/ instead"}
        marker.unlink(missing_ok=True)
        return HTTPStatus.OK, {"seeded": False}

    def seen(self, body: bytes) -> tuple[int, dict]:
        """Record the drafts the page showed; ids that name no draft are counted, not recorded."""
        try:
            ids = json.loads(body.decode("utf-8")).get("ids")
        except (UnicodeDecodeError, ValueError, AttributeError):
            ids = None
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            return HTTPStatus.BAD_REQUEST, {"error": 'expected {"ids": ["<draft id>", ...]}'}
        known = [i for i in dict.fromkeys(ids) if self.known(i) is not None]
        try:
            new = steering.record_impressions(self.content, known)
        except AiimgError as exc:
            return HTTPStatus.INTERNAL_SERVER_ERROR, {"error": str(exc)}
        return HTTPStatus.OK, {"recorded": new, "known": len(known), "unknown": len(set(ids)) - len(known)}

    def thumb(self, draft_id: str) -> bytes | None:
        draft = self.known(draft_id)
        if draft is None:
            return None
        try:
            key = (draft.id, draft.image.stat().st_mtime_ns)
        except OSError:
            return None
        with self._lock:
            if key not in self._thumbs:
                self._thumbs[key] = make_thumb(draft.image)
            return self._thumbs[key]

    def image(self, draft_id: str) -> bytes | None:
        draft = self.known(draft_id)
        try:
            return draft.image.read_bytes() if draft else None
        except OSError:
            return None

    def score_missing(self) -> int:
        """Score drafts nobody scored yet (the loop may run with scoring off, or not at all)."""
        from pipeline.ranking.ranker import Ranker

        cutoff = time.time() - SCORE_AFTER
        todo = [
            e for e in store.entries(self.content) if not e.scores and (_mtime(e.draft.recipe_path) or cutoff) < cutoff
        ]
        return Ranker(self.cfg, self.content).score_entries(todo) if todo else 0


def _no_such(draft_id: str) -> tuple[int, dict]:
    return HTTPStatus.NOT_FOUND, {"error": f"{draft_id[:40]!r}: no such draft"}


def make_thumb(path: Path) -> bytes | None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            img.thumbnail((THUMB, THUMB))
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=82)
            return buf.getvalue()
    except (OSError, UnidentifiedImageError):
        return None


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


# -- HTTP --------------------------------------------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    review: Review  # set on the subclass made by make_server
    server_version = "aiimg-review"

    def log_message(self, fmt, *args):  # quiet: the terminal shows only the URL
        log.debug("review: " + fmt, *args)

    def do_GET(self):
        if not self._host_ok():
            return
        path = self.path.split("?", 1)[0]
        if path == "/":
            return self._send(HTTPStatus.OK, page(self.review), "text/html; charset=utf-8")
        if path == "/api/drafts":
            return self._json(HTTPStatus.OK, self.review.listing())
        if path == "/favicon.ico":
            return self._send(HTTPStatus.NO_CONTENT, b"", "image/x-icon")
        if path == "/api/version":
            return self._json(HTTPStatus.OK, {"version": self.review.version()})
        for prefix, get, kind in (
            ("/thumb/", self.review.thumb, "image/jpeg"),
            ("/image/", self.review.image, "image/png"),
        ):
            if path.startswith(prefix):
                data = get(path[len(prefix) :])
                return (
                    self._send(HTTPStatus.OK, data, kind)
                    if data
                    else self._json(HTTPStatus.NOT_FOUND, {"error": "no such draft"})
                )
        self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})

    def do_POST(self):
        if not self._host_ok():
            return
        if self.headers.get("X-Aiimg-Review") != "1":
            return self._json(HTTPStatus.FORBIDDEN, {"error": "missing X-Aiimg-Review header"})
        if self.path == "/api/seen":
            body = self._body()
            return self._json(*self.review.seen(body)) if body is not None else None
        for prefix, act in (("/api/seed/", self.review.seed), ("/api/unseed/", self.review.unseed)):
            if self.path.startswith(prefix):
                return self._json(*act(self.path[len(prefix) :]))
        self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})

    def _body(self) -> bytes | None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            self._json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": f"a body of 0..{MAX_BODY} bytes"})
            return None
        return self.rfile.read(length)

    def _host_ok(self) -> bool:
        host = (self.headers.get("Host") or "").rsplit(":", 1)[0]
        if host in ("127.0.0.1", "localhost"):
            return True
        self._json(HTTPStatus.FORBIDDEN, {"error": "this page only answers on 127.0.0.1"})
        return False

    def _json(self, status: int, data: dict) -> None:
        self._send(status, json.dumps(data, ensure_ascii=False).encode("utf-8"), "application/json; charset=utf-8")

    def _send(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self'; style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'",
        )
        self.end_headers()
        self.wfile.write(body)


def page(review: Review) -> bytes:
    import jinja2

    env = jinja2.Environment(autoescape=True)
    return env.from_string(PAGE.read_text(encoding="utf-8")).render(root=str(review.content.root)).encode("utf-8")


def make_server(cfg, port: int | None = None) -> ThreadingHTTPServer:
    """The server bound to 127.0.0.1 (port 0: any free port); not yet serving."""
    review = Review(cfg)
    handler = type("ReviewHandler", (Handler,), {"review": review})
    try:
        server = ThreadingHTTPServer(("127.0.0.1", cfg.score.review_port if port is None else port), handler)
    except OSError as exc:
        raise AiimgError(
            f"[score] review_port = {cfg.score.review_port}: cannot listen ({exc.strerror}); pass --port N"
        ) from None
    server.daemon_threads = True
    server.review = review
    return server


def background_scoring(review: Review, stop: threading.Event, every: float = 5.0) -> threading.Thread:
    def loop():
        while not stop.wait(every):
            try:
                review.score_missing()
            except Exception:  # the page must stay up whatever one draft does
                log.exception("review: background scoring failed")

    thread = threading.Thread(target=loop, name="aiimg-review-scoring", daemon=True)
    thread.start()
    return thread


def review_command(cfg) -> None:
    server = make_server(cfg)
    stop = threading.Event()
    if cfg.score.enabled:
        background_scoring(server.review, stop)
    log.info("aiimg review: http://127.0.0.1:%d/  (private to this machine; Ctrl-C stops)", server.server_address[1])
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        server.server_close()
