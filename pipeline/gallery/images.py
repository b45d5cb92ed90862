"""Step 2 of the build: encode every source PNG once, in parallel on all cores.

For one source ``works/<id>/<n>.png`` (or the draft, stem ``draft``) the build writes, under
``output/images/<id>/``::

    <stem>-<key>-<width>.webp     thumbnails at 1x and 2x of [site] thumb_height, and the
                                  display sizes at 1x and 2x of [site] image_width (never
                                  larger than the source)
    <stem>-<key>-<width>.avif     the same sizes, when [site] avif = true
    <stem>-<key>.png              the original: a copy, never a hard link (a tool that optimises
                                  PNGs in output/ in place must not rewrite the creator's source);
                                  re-saved without the A1111 ``parameters`` chunk when
                                  [site] strip_metadata = true

``key`` is 12 hex of sha256(source bytes + image settings + encoder version): a file name
changes exactly when its bytes would, so the names are safe to cache forever, and an image is
re-encoded only when its source or the settings changed (the manifest remembers each key).
Encoder parameters are fixed, so the same source gives the same bytes on every build.

A source Pillow cannot read is a problem of the content: it is reported and skipped. A file
that cannot be written (a full disk) is not: the worker raises the AiimgError of
:mod:`pipeline.files` and the build stops with it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import click
import PIL
from PIL import Image

from pipeline.errors import AiimgError
from pipeline.files import atomic_copy, atomic_write_bytes
from pipeline.gallery.collect import Picture
from pipeline.gallery.output import Output

ENCODER_VERSION = 2  # bump when the encoding below changes: every image is re-encoded once
# libwebp effort 0..6. Measured on ~1 MP art: method 2 makes files as small as Pillow's
# default 4 (within 1%) in a third of the time (26 ms vs 74 ms); 3 and up buy nothing here
WEBP_METHOD = 2
AVIF_QUALITY, AVIF_SPEED = 60, 6


def settings_of(site) -> dict:
    return {
        "thumb_height": site.thumb_height,
        "image_width": site.image_width,
        "webp_quality": site.webp_quality,
        "avif": site.avif,
        "strip_metadata": site.strip_metadata,
        "encoder": ENCODER_VERSION,
        "pillow": PIL.__version__,
    }


def encode_all(pictures: list[Picture], site, out: Output, previous: dict, hashes: dict, problems: list[str]) -> dict:
    """Fill every picture's ``meta``; returns {"made": n, "reused": n, "sources": manifest part,
    "encoded": slots encoded now}. ``hashes`` is the cache of source digests (see
    :func:`hash_files`), updated in place; ``previous`` empty re-encodes every image."""
    settings = settings_of(site)
    digests = hash_files([p.src for p in pictures], hashes)
    settings_text = json.dumps(settings, sort_keys=True)
    keys = {p.src: _key(digests[p.src], settings_text) for p in pictures}
    jobs, reused = [], 0
    for pic in pictures:
        key = keys[pic.src]
        old = previous.get(pic.slot, {})
        if old.get("key") == key and all(out.exists(f) for f in files_of(old.get("meta", {}))):
            pic.meta = old["meta"]
            reused += 1
        else:
            jobs.append((pic, key))
    _run(jobs, settings, out.root, problems)
    sources = {p.slot: {"key": keys[p.src], "meta": p.meta} for p in pictures if p.ok}
    for pic in pictures:
        for rel in files_of(pic.meta):
            out.keep(rel)
    encoded = {p.slot for p, _ in jobs if p.ok}
    return {"made": len(encoded), "reused": reused, "sources": sources, "encoded": encoded}


def files_of(meta: dict) -> list[str]:
    """Every output file one encoded picture owns."""
    groups = [meta.get(k) or [] for k in ("thumb", "display", "thumb_avif", "display_avif")]
    return [f for g in groups for f, _, _ in g] + ([meta["original"]] if meta.get("original") else [])


def hash_files(paths: list[Path], cache: dict) -> dict[Path, str]:
    """sha256 of each file; ``cache`` ({path: [size, mtime_ns, inode, sha256]}) spares re-reading
    unchanged files and is updated in place. Unreadable files get a digest that never matches."""
    todo, out = [], {}
    for path in paths:
        key = _stat_key(path)
        hit = cache.get(str(path))
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
                cache[str(path)] = [*key, digest]
    return out


def _stat_key(path: Path) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def _sha256(path: Path) -> str:
    try:
        with open(path, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError:
        return "unreadable"


def _key(digest: str, settings_text: str) -> str:
    return hashlib.sha256(f"{digest}|{settings_text}".encode()).hexdigest()[:12]


# -- the parallel run ------------------------------------------------------------------------


def _run(jobs: list[tuple[Picture, str]], settings: dict, root: Path, problems: list[str]) -> None:
    if not jobs:
        return
    args = [(str(p.src), str(root), p.out_dir, p.stem, key, settings) for p, key in jobs]
    # a bar on a terminal only: logs and CI output stay free of carriage returns
    bar = click.progressbar(length=len(jobs), label="images", file=sys.stderr, hidden=not sys.stderr.isatty())
    with bar:
        for pic, result in _results(args, [p for p, _ in jobs]):
            if "error" in result:
                problems.append(result["error"])
            else:
                pic.meta = result
            bar.update(1)


def _results(args: list[tuple], pictures: list[Picture]) -> Iterator[tuple[Picture, dict]]:
    """(picture, encode_one's result) as each is done. One image is encoded here: starting a
    pool of processes would cost more than it (a single new variation while serving)."""
    if len(args) == 1 or (os.cpu_count() or 1) == 1:
        for a, pic in zip(args, pictures):
            yield pic, encode_one(*a)
        return
    from concurrent.futures import ProcessPoolExecutor  # multiprocessing: only when there is work
    from concurrent.futures.process import BrokenProcessPool

    with ProcessPoolExecutor(min(len(args), os.cpu_count() or 1)) as pool:
        futures = {pool.submit(encode_one, *a): pic for a, pic in zip(args, pictures)}
        try:
            for future in as_completed(futures):
                yield futures[future], future.result()
        except BrokenProcessPool as exc:
            raise AiimgError("an image encoding process died (out of memory? killed?); run the build again") from exc
        finally:  # a full disk stops the build now, not after encoding every image queued
            pool.shutdown(wait=True, cancel_futures=True)


# -- one image (runs in a worker process) ----------------------------------------------------


def encode_one(src: str, root: str, out_dir: str, stem: str, key: str, settings: dict) -> dict:
    try:
        with Image.open(src) as im:
            im.load()
            image = _normal_mode(im)
            original = _original(src, im, settings)
    except Exception as exc:  # Pillow raises many types for a broken file; all mean "skip it"
        return {"error": f"{src}: cannot read image ({type(exc).__name__}: {exc}); skipped"}
    base = f"{out_dir}/{stem}-{key}"
    meta = {"w": image.width, "h": image.height}
    thumbs = _sizes_by_height(image.size, settings["thumb_height"])
    displays = _sizes_by_width(image.size, settings["image_width"])
    made = _resize_chain(image, sorted(set(thumbs + displays), reverse=True))
    meta["thumb"] = [_save(made[s], root, f"{base}-{s[0]}.webp", "WEBP", settings) for s in thumbs]
    meta["display"] = [_save(made[s], root, f"{base}-{s[0]}.webp", "WEBP", settings) for s in displays]
    if settings["avif"]:
        meta["thumb_avif"] = [_save(made[s], root, f"{base}-{s[0]}.avif", "AVIF", settings) for s in thumbs]
        meta["display_avif"] = [_save(made[s], root, f"{base}-{s[0]}.avif", "AVIF", settings) for s in displays]
    meta["color"] = _colour(made[thumbs[0]])
    meta["original"] = _publish_original(src, original, root, f"{base}.png")
    return meta


def _normal_mode(im: Image.Image) -> Image.Image:
    if im.mode in ("RGB", "RGBA"):
        return im.copy()  # closing the file destroys the image core: keep a copy
    has_alpha = im.mode in ("LA", "PA") or "transparency" in im.info
    return im.convert("RGBA" if has_alpha else "RGB")


def _original(src: str, im: Image.Image, settings: dict) -> bytes | None:
    """PNG bytes to publish instead of the source, or None to publish the source as it is."""
    if not settings["strip_metadata"]:
        return None
    buf = io.BytesIO()
    im.save(buf, format="PNG", compress_level=6)  # no pnginfo: the parameters chunk is gone
    return buf.getvalue()


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
    return [rel, image.width, image.height]


def _colour(image: Image.Image) -> str:
    r, g, b = image.convert("RGB").resize((1, 1), Image.Resampling.BOX).getpixel((0, 0))
    return f"#{r:02x}{g:02x}{b:02x}"


def _publish_original(src: str, data: bytes | None, root: str, rel: str) -> str:
    dest = Path(root) / rel
    if data is None:
        atomic_copy(Path(src), dest)
    else:
        atomic_write_bytes(dest, data, durable=False)
    return rel
