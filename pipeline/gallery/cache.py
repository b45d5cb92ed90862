"""The works cache: what the last build knew of each work, so that the next one reads only what
changed. ``content/.aiimg/gallery-hashes.json`` (safe to delete: the next build reads and hashes
everything again) is JSON Lines: a first line of what every build needs of every work, then a
line per work of what only a build that looks into it needs::

    {"aiimg": "<version>", "format": 3, "root": "<content folder>", "settings": "<image settings>",
     "works": {"<id>": ["<listing key>", [title, description, created, updated, tags, prompt,
                                      draft_id, old_draft],
                        "<digest>", [pictures, originals bytes, display bytes, thumbnail bytes]], ...}}
    ["<id>", {"content": "<sha256 of what it shows>", "pictures": [["1", "works/<id>/1.png"], ...],
              "hashes": {"works/<id>/1.png": [size, mtime_ns, inode, "<sha256>"], ...}}]
    ...

``listing key`` is a hash of what the work was read from (collect.source_listing: its folder's
files by name, size, mtime and inode); the same listing, the same work, so its summary (what the
list pages show) is taken as it is. ``digest`` and the counts describe its line in the manifest as the
last build wrote it, ``settings`` the image settings it was encoded with: a work taken whole
(same listing, same settings, the manifest and this file as the last build left them, its
images folder untouched) keeps its line in the manifest, and its line here, unparsed. A work's
own line (sources by path under the content folder) is parsed only for a work the build looks
into: its sources' digests are reused while their size, mtime and inode are the same. A line is
used only as the build writes it: every field of its type, a variation at least, in order (by
number, then the draft), each path the one :class:`~pipeline.content.Content` gives that picture
(``works/<id>/<n>.png`` or its ``finished/`` copy, ``works/<id>/draft.png`` or an older work's
draft in content/drafts). An entry or line that is not (unreadable, edited, another shape) is a
miss: the work is read from its folder again (collect.read_again).

Summaries are trusted from the same aiimg and the same content folder only; the hashes from any
aiimg. A format-2 file (works with their recipes, hashes by absolute path) gives its hashes.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Iterator

from pipeline import __version__
from pipeline.content import Content
from pipeline.errors import AiimgError
from pipeline.gallery import stamp
from pipeline.gallery.collect import Picture, Work, listed_files, listing_key, read_again
from pipeline.gallery.output import line_id, stem_order

FORMAT = 3


class WorksCache:
    def __init__(self, content: Content, head: dict, lines: dict[str, bytes], crc: int | None = None):
        self.content = content
        self.root = str(content.root)
        self.crc = crc  # CRC-32 of the file as read, then as written (the stamp compares it)
        ours = head.get("format") == FORMAT and head.get("root") == self.root and isinstance(head.get("works"), dict)
        same = ours and head.get("aiimg") == __version__
        works = head["works"] if same else {}
        self.works: dict[str, list] = {w: e for w, e in works.items() if _valid(e, lines.get(w))}
        self.settings = head.get("settings") if same else None
        self.lines = lines if ours else {}
        legacy = head.get("hashes") if head.get("format") == 2 and isinstance(head.get("hashes"), dict) else {}
        self.legacy = {path: h for path, h in legacy.items() if _hash_ok(h)}  # a damaged entry is a miss
        self.fresh: dict[str, list] = {}  # this build's entries and lines
        self.fresh_lines: dict[str, bytes] = {}
        self._sources: dict[str, dict] = {}

    def summaries(self) -> dict[str, tuple[str, list]]:
        """{id: (listing key, summary)} for collect."""
        return {wid: (entry[0], entry[1]) for wid, entry in self.works.items()}

    def digest_and_counts(self, work_id: str) -> tuple[str, list[int]] | None:
        entry = self.works.get(work_id)
        return (entry[2], entry[3]) if entry else None

    def sources(self, work: Work) -> dict | None:
        """A work's own line, parsed and checked now: {"content", "pictures": [[stem, source
        path]], "hashes": {source path: [size, mtime_ns, inode, sha256]}}; None when it is
        missing, unreadable or not as :meth:`put` writes it (the work is read again)."""
        if work.id not in self._sources:
            self._sources[work.id] = self._checked(work, self.lines.get(work.id))
        return self._sources[work.id]

    def _checked(self, work: Work, line: bytes | None) -> dict | None:
        """A line's fields, each of the type :meth:`put` gives them, the sources' paths made again
        by :class:`Content` from the work's id and each picture's stem (a path in the line is
        only compared with them: the cache never names a file the work is not read from)."""
        try:
            wid, data = json.loads(line)
            content, pictures = data["content"], data["pictures"]
            sources = [[stem, self._source(work, stem, rel)] for stem, rel in pictures]
            paths = {rel: src for (_, rel), (_, src) in zip(pictures, sources)}
            hashes = {paths[rel]: h for rel, h in data["hashes"].items()}
        except (AiimgError, AttributeError, KeyError, TypeError, ValueError):
            return None
        stems = [stem for stem, _ in sources]
        ok = (
            wid == work.id
            and isinstance(content, str)
            and all(src for _, src in sources)
            and stems[:1] not in ([], ["draft"])  # a variation at least
            and stems == sorted(set(stems), key=stem_order)
            and all(map(_hash_ok, hashes.values()))
        )
        return {"content": content, "pictures": sources, "hashes": hashes} if ok else None

    def _source(self, work: Work, stem, rel) -> str | None:
        """The path of picture ``stem`` of ``work`` as collect makes it, if ``rel`` names it."""
        return next((src for src in self._candidates(work, stem) if self._rel(src) == rel), None)

    def _candidates(self, work: Work, stem) -> Iterator[str]:
        """Where picture ``stem`` of ``work`` can be read from (an AiimgError for a stem that is
        no variation's): a variation or its finished copy; the work's draft, or an older work's
        in content/drafts."""
        if stem == "draft":
            image = (
                self.content.draft(work.draft_id).image if work.old_draft else self.content.work_draft_image(work.id)
            )
            yield str(image)
        elif isinstance(stem, str):
            yield str(self.content.variation_path(work.id, f"{stem}.png"))
            yield str(self.content.finished_path(work.id, f"{stem}.png"))

    def fill(self, work: Work, problems: list[str]) -> None:
        """A work taken from the summaries that the build must look into: its pictures and the
        key of what it shows, from its line; read again when its line cannot be used."""
        data = self.sources(work)
        if data is None:
            read_again(self.content, work, problems)
            return
        work.content = data["content"]
        work.pictures = [Picture(src, f"images/{work.id}", stem) for stem, src in data["pictures"]]

    def hashes(self, works: list[Work]) -> dict[str, list]:
        """{source path: [size, mtime_ns, inode, sha256]} known for these works' sources."""
        found = dict(self.legacy)
        for work in works:
            found.update((self.sources(work) or {}).get("hashes") or {})
        return found

    def stats(self, works: list[Work]) -> dict[str, list[int]]:
        """{source path: [size, mtime_ns, inode]} of the files in these works' folders, from the
        listings they were read from (keyed as the sources' paths are written): no second stat."""
        root = str(self.content.works_dir)
        found = {}
        for work in works:
            own = work.listing.partition("\n\n")[0]  # an older work's draft folder comes after
            found.update({os.path.join(root, work.id, name): st for name, st in listed_files(own).items()})
        return found

    def keep(self, work: Work) -> None:
        """The entry of a work taken whole: as it was, its line unparsed."""
        self.fresh[work.id] = self.works[work.id]
        self.fresh_lines[work.id] = self.lines[work.id]

    def put(self, work: Work, counts: list[int], hashes: dict) -> None:
        sources = {
            "content": work.content,
            "hashes": {self._rel(p.src): hashes[p.src] for p in work.pictures if p.src in hashes},
            "pictures": [[p.stem, self._rel(p.src)] for p in work.pictures],
        }
        self.fresh[work.id] = [listing_key(work.listing), work.summary(), work.digest, counts]
        self.fresh_lines[work.id] = json.dumps([work.id, sources], sort_keys=True, separators=(",", ":")).encode()

    def save(self, settings: str) -> None:
        """Written only when it changed."""
        same = self.fresh == self.works and self.fresh_lines.keys() == self.lines.keys()
        if same and settings == self.settings and self.crc is not None:
            return
        head = {"aiimg": __version__, "format": FORMAT, "root": self.root, "settings": settings, "works": self.fresh}
        lines = [self.fresh_lines[w] for w in sorted(self.fresh_lines)]
        payload = b"\n".join([json.dumps(head, separators=(",", ":")).encode(), *lines, b""])
        self.crc = zlib.crc32(payload) if stamp.write_bytes(self.content.gallery_cache_path(), payload) else None

    def _rel(self, path: str) -> str:
        """A source's path under the content folder, with "/" ("works/<id>/1.png")."""
        return os.path.relpath(path, self.root).replace(os.sep, "/")


def read(content: Content) -> WorksCache:
    try:
        raw = content.gallery_cache_path().read_bytes()
    except OSError:
        return WorksCache(content, {}, {})
    first, _, rest = raw.partition(b"\n")
    try:
        head = json.loads(first)
    except ValueError:
        head, rest = {}, b""
    lines = {line_id(line): line for line in rest.split(b"\n") if line}
    return WorksCache(content, head if isinstance(head, dict) else {}, lines, zlib.crc32(raw))


def _valid(entry, line: bytes | None) -> bool:
    """Whether a work's entry in the first line has the shape :meth:`WorksCache.put` gives it,
    and its own line is there (its summary is checked by collect, its line when it is used)."""
    return (
        line is not None
        and isinstance(entry, list)
        and len(entry) == 4
        and isinstance(entry[0], str)
        and isinstance(entry[2], str)
        and isinstance(entry[3], list)
        and list(map(type, entry[3])) == _COUNTS
    )


_COUNTS = [int] * 4  # pictures, originals bytes, display bytes, thumbnail bytes


def _hash_ok(h) -> bool:
    return isinstance(h, list) and list(map(type, h)) == [int, int, int, str]
