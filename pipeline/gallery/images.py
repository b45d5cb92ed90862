"""Step 2 of the build: encode every source PNG once, in parallel on all cores.

For one source ``works/<id>/<n>.png`` (or the draft, stem ``draft``) the build writes, under
``output/images/<id>/``::

    <stem>-<key>-<width>.webp     thumbnails at 1x and 2x of [site] thumb_height, and the
                                  display sizes at 1x and 2x of [site] image_width (never
                                  larger than the source)
    <stem>-<key>-<width>.avif     the same sizes, when [site] avif = true
    <stem>-<okey>.png             the original ([site] originals = "png"): a copy, never a hard
                                  link (a tool that optimises PNGs in output/ in place must not
                                  rewrite the creator's source); re-saved without the A1111
                                  ``parameters`` chunk when [site] strip_metadata = true
    <stem>-<okey>.webp            the original as lossless WebP ([site] originals = "webp"): the
                                  same pixels (8 bits a channel), ~40% smaller, the A1111
                                  parameters in EXIF UserComment as A1111 writes them for WebP
                                  (aiimg draft --from, A1111's PNG Info and Civitai read them there)
    (nothing)                     [site] originals = "none": the pages link the largest display
                                  image instead

``key`` is 12 hex of sha256(source bytes + image settings + encoder version), ``okey`` the same
for the original and its own settings (originals, strip_metadata): a file name changes exactly
when its bytes would, so the names are safe to cache forever, and a file is re-encoded only
when its source or its settings changed (the manifest remembers both keys). Switching
``originals`` re-encodes the originals only, never the thumbnails. Encoder parameters are
fixed, so the same source gives the same bytes on every build.

A picture's ``meta`` (in the manifest, and what the templates read): w, h, color, thumb,
display (and thumb_avif, display_avif): [[file, width, height], ...] smallest first;
``original``: the file a page links as "full size" (the largest display image when originals =
"none"); ``original_format``: "PNG", "WebP" or "" (none published); ``bytes``: {"thumb",
"display", "original"} bytes written, for the size budget.

A source Pillow cannot read is a problem of the content: it is reported and skipped. A file
that cannot be written (a full disk) is not: the worker raises the AiimgError of
:mod:`pipeline.files` and the build stops with it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import json
import os
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import click
import PIL
from PIL import Image, features

from pipeline.errors import AiimgError
from pipeline.files import atomic_copy, atomic_write_bytes
from pipeline.gallery.cache import WorksCache
from pipeline.gallery.collect import Picture, Work, work_digest
from pipeline.gallery.output import (
    IMAGE_PARTS,
    Output,
    image_files,
    meta_bytes,
    original_files,
    record_entries,
    record_line,
)

ENCODER_VERSION = 3  # bump when the encoding below changes: every image is re-encoded once
# libwebp effort 0..6. Measured on ~1 MP art: method 2 makes files as small as Pillow's
# default 4 (within 1%) in a third of the time (26 ms vs 74 ms); 3 and up buy nothing here
WEBP_METHOD = 2
AVIF_QUALITY, AVIF_SPEED = 60, 6
# Lossless originals: quality is libwebp's effort here. Measured on ~1 MP art: 0.61x the PNG's
# bytes in ~0.2 s; the most effort (quality 100, method 6) gets 0.59x in ~6 s; the least, 0.65x
ORIGINAL_WEBP = {"lossless": True, "quality": 25, "method": 1, "exact": True}
ORIGINAL_FORMATS = {"png": "PNG", "webp": "WebP", "none": ""}
_EXIF_IFD, _USER_COMMENT = 0x8769, 0x9286


def settings_of(site) -> dict:
    """What the thumbnails and display images are made with (their key)."""
    return {
        "thumb_height": site.thumb_height,
        "image_width": site.image_width,
        "webp_quality": site.webp_quality,
        "avif": site.avif,
        "encoder": ENCODER_VERSION,
        "pillow": PIL.__version__,
        "libwebp": features.version("webp"),
    }


def original_settings_of(site) -> dict:
    """What the original is published as (its own key: switching it leaves the thumbnails be)."""
    settings = {"originals": site.originals, "strip_metadata": site.strip_metadata, "encoder": ENCODER_VERSION}
    if site.originals == "webp":
        settings.update(webp=ORIGINAL_WEBP, pillow=PIL.__version__, libwebp=features.version("webp"))
    elif site.originals == "png" and site.strip_metadata:
        settings["pillow"] = PIL.__version__
    return settings


def settings_text(site) -> str:
    """Every image setting, as the works cache records them: other settings, other keys."""
    return json.dumps({**settings_of(site), **original_settings_of(site)}, sort_keys=True)


def encode_all(
    works: list[Work], site, out: Output, cache: WorksCache, problems: list[str], pool=None, verified=False
) -> dict:
    """Settle every work's images: its ``record`` (its line in the manifest; empty when no
    variation could be read) and ``digest``. A work taken whole from the last build (the same
    listing and image settings, ``verified``: the manifest and the cache as the last build left
    them, and its images folder untouched) keeps its line as it was read, unparsed. The others'
    sources are hashed (an unchanged file by its cached digest) and each picture reused (same
    key, files there) or encoded, in parallel (``pool``: :func:`workers`; None: here). Returns
    {"made", "reused", "encoded": ids of the works with a picture encoded now, "bytes": the
    images' bytes by part of the size budget}."""
    whole = verified and cache.settings == settings_text(site)
    todo, reused, size = [], 0, dict.fromkeys(IMAGE_PARTS.values(), 0)
    for work in works:
        known = cache.digest_and_counts(work.id) if whole and work.pictures is None else None
        line = out.previous["records"].get(work.id)
        if known and line and out.trusted(f"images/{work.id}"):
            work.record, work.digest = line, known[0]
            reused += known[1][0]
            for part, n in zip(IMAGE_PARTS.values(), known[1][1:]):
                size[part] += n
            out.records[work.id] = line
            cache.keep(work)
            continue
        if work.pictures is None:
            cache.fill(work, problems)
        todo.append(work)
    made, hashes = _settle(todo, site, out, cache, problems, pool)
    for work in todo:
        if work.record:
            # the metas just made (work.parsed), not a parse of the line they were written to
            counts = [sum(p.ok for p in work.pictures), *meta_bytes(work.metas.values()).values()]
            reused += counts[0] - len(made.get(work.id, ()))
            for part, n in zip(IMAGE_PARTS.values(), counts[1:]):
                size[part] += n
            out.records[work.id] = work.record
            if work.cacheable:
                cache.put(work, counts, hashes)
    for work in todo:  # the encoding processes wrote there (or tried to)
        out.touch(f"images/{work.id}/")
    encoded = {wid for wid, stems in made.items() if stems}
    return {"made": sum(len(s) for s in made.values()), "reused": reused, "encoded": encoded, "bytes": size}


def _settle(works: list[Work], site, out: Output, cache: WorksCache, problems: list[str], pool) -> tuple[dict, dict]:
    """Hash, reuse or encode the pictures of ``works``; give each its record and digest.
    Returns ({work id: stems encoded now}, the sources' hashes)."""
    settings, osettings = settings_of(site), original_settings_of(site)
    pictures = [p for w in works for p in w.pictures]
    hashes = cache.hashes(works)
    digests = hash_files([p.src for p in pictures], hashes, cache.stats(works))
    text, otext = json.dumps(settings, sort_keys=True), json.dumps(osettings, sort_keys=True)
    keys = {p.src: (_key(digests[p.src], text), _key(digests[p.src], otext)) for p in pictures}
    jobs: list[tuple[Picture, str, str, dict]] = []
    for work in works:
        old = dict(record_entries(out.previous["records"].get(work.id, b"")))
        for pic in work.pictures:
            _reuse(pic, keys[pic.src], old.get(pic.stem) or {}, out, jobs)
    _run(jobs, {**settings, **osettings}, out.root, problems, pool)
    queued = {id(pic) for pic, *_ in jobs}
    made = {w.id: {p.stem for p in w.pictures if id(p) in queued and p.ok} for w in works}
    for work in works:
        _record(work, keys)
    return made, hashes


def _reuse(pic: Picture, keys: tuple[str, str], old: dict, out: Output, jobs: list) -> None:
    """Reuse what is still good of the last build's encoding of ``pic``; queue the rest in
    ``jobs`` (a new ``originals`` re-encodes the originals alone)."""
    key, okey = keys
    meta = old.get("meta") or {}
    images_ok = old.get("key") == key and meta and all(out.exists(f, made_last=True) for f in image_files(meta))
    if images_ok and old.get("original_key") == okey and all(out.exists(f, True) for f in original_files(meta)):
        pic.meta = meta
    else:
        jobs.append((pic, key, okey, meta if images_ok else {}))


def _record(work: Work, keys: dict) -> None:
    """Its line in the manifest (its readable pictures; empty without a readable variation) and
    its digest: what it shows and its images."""
    ok = [p for p in work.pictures if p.ok]
    entries = [(p.stem, {"key": keys[p.src][0], "original_key": keys[p.src][1], "meta": p.meta}) for p in ok]
    work.record = record_line(work.id, entries) if any(p.stem != "draft" for p in ok) else b""
    work.parsed = {p.stem: p.meta for p in ok}  # what the pages read: the same dicts, not a parse of the line
    work.digest = work_digest(work.content, work.record)


def hash_files(paths: list[str], cache: dict, stats: dict | None = None) -> dict[str, str]:
    """sha256 of each file; ``cache`` ({path: [size, mtime_ns, inode, sha256]}) spares re-reading
    unchanged files and is updated in place; ``stats`` ({path: [size, mtime_ns, inode]}) spares
    the stat of a file already listed (the works snapshot: 40,000 sources at 10,000 works).
    Unreadable files get a digest that never matches."""
    todo, out = [], {}
    stats = stats or {}
    for path in paths:
        key = stats.get(path) or _stat_key(path)
        hit = cache.get(path)
        if key and hit and hit[:3] == key:
            out[path] = hit[3]
        else:
            todo.append((path, key))
    if not todo:
        return out
    # hashlib releases the GIL on large buffers: threads hash on all cores
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        for (path, key), digest in zip(todo, pool.map(_sha256, [p for p, _ in todo])):
            out[path] = digest
            if key and digest != "unreadable":
                cache[path] = [*key, digest]
    return out


def _stat_key(path: str) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def _sha256(path: str) -> str:
    try:
        with open(path, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError:
        return "unreadable"


def _key(digest: str, settings_text: str) -> str:
    return hashlib.sha256(f"{digest}|{settings_text}".encode()).hexdigest()[:12]


# -- the parallel run ------------------------------------------------------------------------


@contextlib.contextmanager
def workers() -> Iterator:
    """A pool of encoding processes (None on one core), forked now. Start it before the works
    are read: a forked process keeps the memory it was forked with alive for as long as it runs
    (its pages are shared only until this process writes to them), so workers forked at 10,000
    works would hold a few hundred MB of recipes they never use; forked first, they share this
    process's imports only. Unused (nothing to encode), it costs two forks."""
    count = os.cpu_count() or 1
    if count == 1:
        yield None
        return
    from concurrent.futures import ProcessPoolExecutor  # multiprocessing: only when building

    pool = ProcessPoolExecutor(count)
    try:
        pool.submit(int)  # the first task forks every worker
        yield pool
    finally:  # a full disk stops the build now, not after encoding every image queued
        pool.shutdown(wait=True, cancel_futures=True)


def _run(jobs: list[tuple[Picture, str, str, dict]], settings: dict, root: Path, problems: list[str], pool) -> None:
    if not jobs:
        return
    args = [(p.src, str(root), p.out_dir, p.stem, key, okey, settings, kept) for p, key, okey, kept in jobs]
    # a bar on a terminal only: logs and CI output stay free of carriage returns
    bar = click.progressbar(length=len(jobs), label="images", file=sys.stderr, hidden=not sys.stderr.isatty())
    with bar:
        for pic, result in _results(args, [p for p, *_ in jobs], pool):
            if "error" in result:
                problems.append(result["error"])
            else:
                pic.meta = result
            bar.update(1)


def _results(args: list[tuple], pictures: list[Picture], pool) -> Iterator[tuple[Picture, dict]]:
    """(picture, encode_one's result) as each is done. One image is encoded here: handing it
    to a process would cost more than it (a single new variation while serving). A few tasks
    per worker are queued at a time, not all: 40,000 queued tasks are ~40 MB of bookkeeping."""
    if len(args) == 1 or pool is None:
        for a, pic in zip(args, pictures):
            yield pic, encode_one(*a)
        return
    from concurrent.futures import FIRST_COMPLETED, wait
    from concurrent.futures.process import BrokenProcessPool

    todo, pending = iter(zip(args, pictures)), {}
    window = 4 * (os.cpu_count() or 1)
    try:
        while True:
            for a, pic in itertools.islice(todo, window - len(pending)):
                pending[pool.submit(encode_one, *a)] = pic
            if not pending:
                return
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                yield pending.pop(future), future.result()
    except BrokenProcessPool as exc:
        raise AiimgError("an image encoding process died (out of memory? killed?); run the build again") from exc


# -- one image (runs in a worker process) ----------------------------------------------------


def encode_one(
    src: str, root: str, out_dir: str, stem: str, key: str, okey: str, settings: dict, kept: dict | None = None
) -> dict:
    """The picture's meta. ``kept``: its meta from the last build when its thumbnails and display
    images are still good (same key, files there): only the original is made again."""
    kept = kept or {}
    try:
        if kept and not _needs_pixels(settings):
            image, info = None, {}  # a PNG published as it is: a copy, no decode
        else:
            with Image.open(src) as im:
                im.load()
                image, info = _normal_mode(im), dict(im.info)
    except Exception as exc:  # Pillow raises many types for a broken file; all mean "skip it"
        return {"error": f"{src}: cannot read image ({type(exc).__name__}: {exc}); skipped"}
    meta = {k: v for k, v in kept.items() if k not in ("original", "original_format")}
    if not kept:
        meta.update(_derivatives(image, root, f"{out_dir}/{stem}-{key}", settings))
    original = _publish_original(src, image, info, root, f"{out_dir}/{stem}-{okey}", settings)
    meta["bytes"] = {**meta["bytes"], "original": original[1] if original else 0}
    meta["original"] = original[0] if original else meta["display"][-1][0]
    meta["original_format"] = ORIGINAL_FORMATS[settings["originals"]]
    return meta


def _derivatives(image: Image.Image, root: str, base: str, settings: dict) -> dict:
    """Thumbnails and display images (WebP, and AVIF when asked), the average colour, their bytes."""
    meta: dict = {"w": image.width, "h": image.height}
    thumbs = _sizes_by_height(image.size, settings["thumb_height"])
    displays = _sizes_by_width(image.size, settings["image_width"])
    made = _resize_chain(image, sorted(set(thumbs + displays), reverse=True))
    sizes = {"thumb": 0, "display": 0}
    formats = [("", "webp", "WEBP")] + ([("_avif", "avif", "AVIF")] if settings["avif"] else [])
    for suffix, ext, fmt in formats:
        saved: dict[tuple[int, int], list] = {}  # a small source's 2x thumbnail is its display image
        for kind, wanted in (("display", displays), ("thumb", thumbs)):
            for s in wanted:
                if s not in saved:
                    saved[s] = _save(made[s], root, f"{base}-{s[0]}.{ext}", fmt, settings)
                    sizes[kind] += saved[s][3]  # each file counted once, as a display image first
            meta[kind + suffix] = [saved[s][:3] for s in wanted]
    meta["color"] = _colour(made[thumbs[0]])
    meta["bytes"] = sizes
    return meta


def _needs_pixels(settings: dict) -> bool:
    """Whether publishing the original needs the decoded image (anything but a plain copy)."""
    return settings["originals"] == "webp" or (settings["originals"] == "png" and settings["strip_metadata"])


def _normal_mode(im: Image.Image) -> Image.Image:
    if im.mode in ("RGB", "RGBA"):
        return im.copy()  # closing the file destroys the image core: keep a copy
    has_alpha = im.mode in ("LA", "PA") or "transparency" in im.info
    return im.convert("RGBA" if has_alpha else "RGB")


def _sizes_by_height(size: tuple[int, int], height: int) -> list[tuple[int, int]]:
    w, h = size
    heights = sorted({min(height, h), min(2 * height, h)})
    return [(max(1, round(w * t / h)), t) for t in heights]


def _sizes_by_width(size: tuple[int, int], width: int) -> list[tuple[int, int]]:
    w, h = size
    widths = sorted({min(width, w), min(2 * width, w)})
    return [(t, max(1, round(h * t / w))) for t in widths]


def _resize_chain(image: Image.Image, sizes: list[tuple[int, int]]) -> dict:
    """Largest first, each from the one before: the big decode is resampled once."""
    made, current = {}, image
    for size in sizes:
        if size != current.size:
            current = current.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
        made[size] = current
    return made


def _save(image: Image.Image, root: str, rel: str, fmt: str, settings: dict) -> list:
    buf = io.BytesIO()
    if fmt == "WEBP":
        image.save(buf, "WEBP", quality=settings["webp_quality"], method=WEBP_METHOD, exact=False)
    else:
        image.save(buf, "AVIF", quality=AVIF_QUALITY, speed=AVIF_SPEED, max_threads=1)
    atomic_write_bytes(Path(root) / rel, buf.getvalue(), durable=False)
    return [rel, image.width, image.height, buf.tell()]


def _colour(image: Image.Image) -> str:
    r, g, b = image.convert("RGB").resize((1, 1), Image.Resampling.BOX).getpixel((0, 0))
    return f"#{r:02x}{g:02x}{b:02x}"


def _publish_original(src: str, image, info: dict, root: str, base: str, settings: dict) -> tuple[str, int] | None:
    """(file, bytes) of the published original, or None with originals = "none"."""
    kind = settings["originals"]
    if kind == "none":
        return None
    rel = f"{base}.{kind}"
    dest = Path(root) / rel
    if kind == "png" and not settings["strip_metadata"]:
        atomic_copy(Path(src), dest)
        return rel, dest.stat().st_size
    buf = io.BytesIO()
    if kind == "png":
        image.save(buf, format="PNG", compress_level=6)  # no pnginfo: the parameters chunk is gone
    else:
        params = None if settings["strip_metadata"] else info.get("parameters")
        image.save(buf, "WEBP", **ORIGINAL_WEBP, exif=_exif(params), icc_profile=info.get("icc_profile") or b"")
    atomic_write_bytes(dest, buf.getvalue(), durable=False)
    return rel, buf.tell()


def _exif(parameters: str | None) -> bytes:
    """EXIF with the A1111 parameters in UserComment, as A1111 writes it into a WebP or JPEG
    (piexif's "UNICODE" form: an 8-byte charset, then UTF-16 big-endian); b"" without them."""
    if not parameters:
        return b""
    exif = Image.Exif()
    exif.get_ifd(_EXIF_IFD)[_USER_COMMENT] = b"UNICODE\0" + parameters.encode("utf-16-be")
    return exif.tobytes()
