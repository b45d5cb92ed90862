"""Step 2 of the build: encode every source PNG once, in parallel on all cores.

For one source ``works/<id>/<n>.png`` (or the draft, stem ``draft``) the build writes, under
``output/images/<id>/``::

    <stem>-<key>-<width>.webp     thumbnails at 1x and 2x of [site] thumb_height, and the
                                  display sizes at 1x and 2x of [site] image_width (never
                                  larger than the source)
    <stem>-<key>-<width>.avif     the same sizes, when [site] avif = true
    <stem>-<key>.png              the original (a hard link or copy; re-saved without the
                                  A1111 ``parameters`` chunk when [site] strip_metadata = true)

``key`` is 12 hex of sha256(source bytes + image settings + encoder version): a file name
changes exactly when its bytes would, so the names are safe to cache forever, and an image is
re-encoded only when its source or the settings changed (the manifest remembers each key).
Encoder parameters are fixed, so the same source gives the same bytes on every build.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import PIL
from PIL import Image

from pipeline.gallery.collect import Picture
from pipeline.gallery.output import Output, write_file

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
    """Fill every picture's ``meta``; returns {"made": n, "reused": n, "sources": manifest part}.
    ``hashes`` is the cache of source digests (see :func:`hash_files`), updated in place."""
    settings = settings_of(site)
    digests = hash_files([p.src for p in pictures], hashes)
    settings_text = json.dumps(settings, sort_keys=True)
    keys = {p.src: _key(digests[p.src], settings_text) for p in pictures}
    jobs, reused = [], 0
    for pic in pictures:
        key = keys[pic.src]
        old = previous.get(_slot(pic), {})
        if old.get("key") == key and all(out.exists(f) for f in files_of(old.get("meta", {}))):
            pic.meta = old["meta"]
            reused += 1
        else:
            jobs.append((pic, key))
    _run(jobs, settings, out.root, problems)
    sources = {_slot(p): {"key": keys[p.src], "meta": p.meta} for p in pictures if p.ok}
    for pic in pictures:
        for rel in files_of(pic.meta):
            out.keep(rel)
    return {"made": sum(1 for p, _ in jobs if p.ok), "reused": reused, "sources": sources}


def _slot(pic: Picture) -> str:
    return f"{pic.out_dir}/{pic.stem}"


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
    from concurrent.futures import ProcessPoolExecutor  # multiprocessing: only when there is work

    args = [(str(p.src), str(root), p.out_dir, p.stem, key, settings) for p, key in jobs]
    bar = Progress(len(jobs), "images")
    with ProcessPoolExecutor(min(len(jobs), os.cpu_count() or 1)) as pool:
        futures = {pool.submit(encode_one, *a): pic for a, (pic, _) in zip(args, jobs)}
        for future in as_completed(futures):
            result = future.result()
            if "error" in result:
                problems.append(result["error"])
            else:
                futures[future].meta = result
            bar.step()
    bar.done()


class Progress:
    """A one-line progress bar on stderr, only when it is a terminal (logs stay clean)."""

    def __init__(self, total: int, label: str):
        self.total, self.label, self.n = total, label, 0
        self.live = sys.stderr.isatty()

    def step(self) -> None:
        self.n += 1
        if self.live:
            filled = int(30 * self.n / self.total)
            sys.stderr.write(f"\r{self.label} [{'#' * filled}{'.' * (30 - filled)}] {self.n}/{self.total}")
            sys.stderr.flush()

    def done(self) -> None:
        if self.live:
            sys.stderr.write("\n")


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
    write_file(Path(root) / rel, buf.getvalue())
    return [rel, image.width, image.height]


def _colour(image: Image.Image) -> str:
    r, g, b = image.convert("RGB").resize((1, 1), Image.Resampling.BOX).getpixel((0, 0))
    return f"#{r:02x}{g:02x}{b:02x}"


def _publish_original(src: str, data: bytes | None, root: str, rel: str) -> str:
    dest = Path(root) / rel
    if data is not None:
        write_file(dest, data)
        return rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    try:
        os.link(src, tmp)  # no copy when output/ is on the same disk as content/
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dest)
    return rel
