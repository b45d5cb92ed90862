"""A small, real content folder for the gallery tests (and the synthetic art the bench uses).

Images compress like real art: smooth gradients, soft shapes and a little grain, not noise.
Every PNG carries the A1111 parameters chunk written by pipeline.metadata.png_bytes.
"""

from __future__ import annotations

import json
import logging
import random
import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

from pipeline import config as config_mod
from pipeline.content import Content
from pipeline.files import atomic_write_bytes, atomic_write_json
from pipeline.metadata import png_bytes

HOSTILE = '<script>alert(1)</script> "onload=x'
# Debian's chromium driven by Playwright on a machine without GPU or network (tests and bench)
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SIZES = [(256, 192), (192, 256), (224, 224), (256, 160), (176, 256), (240, 208)]
PICKS = [
    ("red", "kimono"),
    ("blue", "armor"),
    ("silver", "kimono"),
    ("red", "hoodie"),
    ("black", "dress"),
    ("blue", "kimono"),
]


def art(width: int, height: int, seed: int) -> Image.Image:
    """A deterministic picture: two-colour gradient, blurred shapes, fine grain."""
    rnd = random.Random(seed)
    colours = [tuple(rnd.randrange(30, 230) for _ in range(3)) for _ in range(6)]
    grad = Image.linear_gradient("L").rotate(rnd.randrange(360)).resize((width, height))
    image = Image.composite(
        Image.new("RGB", (width, height), colours[0]), Image.new("RGB", (width, height), colours[1]), grad
    )
    shapes = Image.new("RGB", (width, height), colours[1])
    mask = Image.new("L", (width, height), 0)
    draw, mdraw = ImageDraw.Draw(shapes), ImageDraw.Draw(mask)
    for colour in colours[2:]:
        box = _box(rnd, width, height)
        draw.ellipse(box, fill=colour)
        mdraw.ellipse(box, fill=rnd.randrange(120, 255))
    image.paste(
        shapes.filter(ImageFilter.GaussianBlur(max(1, width // 60))), mask=mask.filter(ImageFilter.GaussianBlur(2))
    )
    # seeded grain (Image.effect_noise is not seeded): the same bytes on every run
    grain = Image.frombytes("L", (width, height), rnd.randbytes(width * height)).convert("RGB")
    return Image.blend(image, grain, 0.05)


def _box(rnd: random.Random, width: int, height: int) -> list[int]:
    x, y = rnd.randrange(width), rnd.randrange(height)
    r = rnd.randrange(max(4, width // 10), max(5, width // 3))
    return [x - r, y - r, x + r, y + r]


def recipe(rid: str, created: str, size: tuple[int, int], seed: int, prompt: str, picks: tuple[str, ...]) -> dict:
    return {
        "id": rid,
        "created": created,
        "model": {"name": "tiny-sd", "hash": "3f0845323f"},
        "scheduler": "EulerDiscreteScheduler",
        "template": "masterpiece, {red|blue} hair, __outfit__",
        "prompt": prompt,
        "negative_prompt": "lowres, bad anatomy",
        "picks": [{"token": f"{{{p}}}", "value": p} for p in picks],
        "prompt_seed": seed,
        "seed": seed,
        "width": size[0],
        "height": size[1],
        "steps": 25,
        "guidance_scale": 7.0,
        "seconds": 1.5,
        "aiimg_version": "0.1.0",
    }


def add_work(
    content_dir: Path,
    i: int,
    variations: int = 3,
    prompt: str | None = None,
    picks: tuple[str, ...] | None = None,
    size: tuple[int, int] | None = None,
    in_work: bool = False,
    in_drafts: bool = True,
) -> str:
    """Draft i and its work with N variations; returns the id. Times grow with i.

    Where the draft goes: ``in_drafts``: content/drafts/<day>/<id>/ (where the studio makes it;
    the only place for works made before works were self-contained); ``in_work``: a copy in
    content/works/<id>/ (what the studio copies there when a round begins)."""
    content = Content(content_dir).ensure() if in_drafts else Content(content_dir)  # else: content/works alone
    wid = work_id(i)
    size = size or SIZES[i % len(SIZES)]
    picks = picks or PICKS[i % len(PICKS)]
    prompt = prompt or f"masterpiece, {picks[0]} hair, {picks[1]}, night city"
    created = f"2026-11-25T{_clock(i)}Z"
    draft = recipe(wid, created, (size[0] * 4 // 5, size[1] * 4 // 5), 1000 + i, prompt, picks)
    png = png_bytes(art(draft["width"], draft["height"], i), draft)
    folders = ([content.draft_folder(wid)] if in_drafts else []) + ([content.work_folder(wid)] if in_work else [])
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(folder / "draft.png", png)
        atomic_write_json(folder / "draft.json", draft)
    _variations(content, wid, draft, size, variations, created.replace("Z", "") + "Z")
    return wid


def work_id(i: int) -> str:
    """The id of work i, made at 15:00:00 + i seconds on 2026-11-25 (up to 32,399 works)."""
    return f"20261125-{_clock(i).replace(':', '')}-{i:04x}"


def _clock(i: int) -> str:
    return f"{15 + i // 3600:02d}:{i // 60 % 60:02d}:{i % 60:02d}"


def _variations(content: Content, wid: str, draft: dict, size, count: int, created: str) -> None:
    folder = content.work_folder(wid)
    folder.mkdir(parents=True, exist_ok=True)
    files, recipes = [], []
    for n in range(1, count + 1):
        r = {
            **recipe(wid, created, size, draft["seed"] * 10 + n, draft["prompt"], ()),
            "picks": draft["picks"],
            "index": n,
            "file": f"{n}.png",
            "round": 1,
            "parent": wid,
            "strength": 0.5,
        }
        atomic_write_bytes(folder / f"{n}.png", png_bytes(art(size[0], size[1], draft["seed"] * 10 + n), r))
        files.append(f"{n}.png")
        recipes.append(r)
    # the file as it is on disk (DESIGN.md), whatever the studio's types for it are
    work = {
        "draft": wid,
        "rounds": [{"marker": "1-abc", "count": count, "files": files, "started": created, "overrides": {}}],
        "variations": recipes,
    }
    atomic_write_json(folder / "work.json", work)


def recipes_of(content_dir: Path, wid: str) -> list[dict]:
    """The variations' recipes of a work, as work.json holds them."""
    return json.loads((Path(content_dir) / "works" / wid / "work.json").read_text(encoding="utf-8"))["variations"]


def draft_recipe(content_dir: Path, wid: str) -> dict:
    return json.loads(Content(content_dir).draft(wid).recipe_path.read_text(encoding="utf-8"))


def cached_hashes(content_dir: Path) -> dict[str, list]:
    """{source path: [size, mtime_ns, inode, sha256]} of the gallery's works cache (cache.py:
    a line per work after the first, paths under the content folder)."""
    lines = Content(content_dir).gallery_cache_path().read_text(encoding="utf-8").splitlines()[1:]
    return {str(Path(content_dir) / rel): h for line in lines for rel, h in json.loads(line)[1]["hashes"].items()}


def make_content(root: Path, works: int = 6) -> Path:
    content_dir = Path(root) / "content"
    for i in range(works):
        add_work(content_dir, i)
    return content_dir


def format_1_content(root: Path) -> Path:
    """The content :data:`FORMAT_1_MANIFEST` was written for (with ``site_config(root,
    page_size=2)``): an older work of 2 variations, its draft in content/drafts only, and a work
    of 1 that holds its draft."""
    content_dir = Path(root) / "content"
    add_work(content_dir, 0, variations=2)
    add_work(content_dir, 1, variations=1, in_work=True, in_drafts=False)
    return content_dir


# output/.aiimg-build.json as aiimg wrote it before the manifest's format 2 (commit 8d5fece^,
# without the search extra) for format_1_content(): byte for byte, less its final newline. Its
# image keys hold that Pillow's version: a test gives it the keys of the images it has.
FORMAT_1_MANIFEST = (
    '{"files":[".nojekyll","404.html","assets/site-8db31d77f6.css","assets/viewer-077230e424.js","favicon.ico",'
    '"favicon.svg","feed.xml","images/20261125-150000-0000/1-31049bb43e1c.png",'
    '"images/20261125-150000-0000/1-cdd708d370e6-160.webp","images/20261125-150000-0000/1-cdd708d370e6-240.webp",'
    '"images/20261125-150000-0000/1-cdd708d370e6-256.webp","images/20261125-150000-0000/2-08c44de48acf-160.webp",'
    '"images/20261125-150000-0000/2-08c44de48acf-240.webp","images/20261125-150000-0000/2-08c44de48acf-256.webp",'
    '"images/20261125-150000-0000/2-391d8d0e65a5.png","images/20261125-150000-0000/draft-2613789e3489.png",'
    '"images/20261125-150000-0000/draft-889197801222-160.webp",'
    '"images/20261125-150000-0000/draft-889197801222-204.webp",'
    '"images/20261125-150001-0001/1-4fbe5cf1da59-180.webp","images/20261125-150001-0001/1-4fbe5cf1da59-192.webp",'
    '"images/20261125-150001-0001/1-4fbe5cf1da59-90.webp","images/20261125-150001-0001/1-bf13e32acaca.png",'
    '"images/20261125-150001-0001/draft-12f3f4a1d106-153.webp",'
    '"images/20261125-150001-0001/draft-12f3f4a1d106-90.webp",'
    '"images/20261125-150001-0001/draft-d9527d0833c0.png","index.html","robots.txt","sitemap.xml",'
    '"tags/armor/index.html","tags/blue/index.html","tags/index.html","tags/kimono/index.html",'
    '"tags/red/index.html","works/20261125-150000-0000/index.html","works/20261125-150001-0001/index.html"],'
    '"format":1,"pages":{"index.html":"4456adae52410cc9db4add43fed160c873b55f205c09e89cbd1c999bc9708807",'
    '"tags/armor/index.html":"9ab10ce57ffea01d69fca9eb1e82f796cc9f1f32e19cc033a537a823e47dd3b3",'
    '"tags/blue/index.html":"51cf2dde526ee9e4d44d3346821440d9ab5056966d767e76d2023e551448d417",'
    '"tags/index.html":"85a829d0d47ea4f4026f2863d1833e20974a216ed74b1ace2e60c930f2677ce7",'
    '"tags/kimono/index.html":"de72d3b75193b1749d9d3e675869b59674f1cc350eb9dffb5f298517391d07ca",'
    '"tags/red/index.html":"0ed8d9ed869ace282175520ecd6f56f5fb01c788dc8a5763012a9769ffa9f587",'
    '"works/20261125-150000-0000/index.html":"c6e59d1b847c72da54ed84eb219f90f2b06f26c815bc106efac6dfbbcdb7d7e1",'
    '"works/20261125-150001-0001/index.html":"32bbcca98bed609c1a4327fe0a160e8d4551f40d9a04c13acdff58922f530904"},'
    '"sizes":{".nojekyll":0,"404.html":2321,"assets/site-8db31d77f6.css":12207,'
    '"assets/viewer-077230e424.js":4836,"favicon.ico":144,"favicon.svg":263,"feed.xml":2323,"index.html":3992,'
    '"robots.txt":72,"sitemap.xml":931,"tags/armor/index.html":3424,"tags/blue/index.html":3418,'
    '"tags/index.html":2467,"tags/kimono/index.html":3500,"tags/red/index.html":3482,'
    '"works/20261125-150000-0000/index.html":9910,"works/20261125-150001-0001/index.html":7600},'
    '"sources":{"images/20261125-150000-0000/1":{"key":"cdd708d370e6","meta":{"bytes":{"display":8396,'
    '"original":80001,"thumb":1462},"color":"#8c6076",'
    '"display":[["images/20261125-150000-0000/1-cdd708d370e6-240.webp",240,180],'
    '["images/20261125-150000-0000/1-cdd708d370e6-256.webp",256,192]],"h":192,'
    '"original":"images/20261125-150000-0000/1-31049bb43e1c.png","original_format":"PNG",'
    '"thumb":[["images/20261125-150000-0000/1-cdd708d370e6-160.webp",160,120],'
    '["images/20261125-150000-0000/1-cdd708d370e6-256.webp",256,192]],"w":256},"original_key":"31049bb43e1c"},'
    '"images/20261125-150000-0000/2":{"key":"08c44de48acf","meta":{"bytes":{"display":6352,"original":79290,'
    '"thumb":878},"color":"#984f88","display":[["images/20261125-150000-0000/2-08c44de48acf-240.webp",240,180],'
    '["images/20261125-150000-0000/2-08c44de48acf-256.webp",256,192]],"h":192,'
    '"original":"images/20261125-150000-0000/2-391d8d0e65a5.png","original_format":"PNG",'
    '"thumb":[["images/20261125-150000-0000/2-08c44de48acf-160.webp",160,120],'
    '["images/20261125-150000-0000/2-08c44de48acf-256.webp",256,192]],"w":256},"original_key":"391d8d0e65a5"},'
    '"images/20261125-150000-0000/draft":{"key":"889197801222","meta":{"bytes":{"display":2960,"original":50981,'
    '"thumb":1424},"color":"#5d8496","display":[["images/20261125-150000-0000/draft-889197801222-204.webp",204,'
    '153]],"h":153,"original":"images/20261125-150000-0000/draft-2613789e3489.png","original_format":"PNG",'
    '"thumb":[["images/20261125-150000-0000/draft-889197801222-160.webp",160,120],'
    '["images/20261125-150000-0000/draft-889197801222-204.webp",204,153]],"w":204},'
    '"original_key":"2613789e3489"},"images/20261125-150001-0001/1":{"key":"4fbe5cf1da59",'
    '"meta":{"bytes":{"display":3604,"original":77888,"thumb":2926},"color":"#58acb7",'
    '"display":[["images/20261125-150001-0001/1-4fbe5cf1da59-192.webp",192,256]],"h":256,'
    '"original":"images/20261125-150001-0001/1-bf13e32acaca.png","original_format":"PNG",'
    '"thumb":[["images/20261125-150001-0001/1-4fbe5cf1da59-90.webp",90,120],'
    '["images/20261125-150001-0001/1-4fbe5cf1da59-180.webp",180,240]],"w":192},"original_key":"bf13e32acaca"},'
    '"images/20261125-150001-0001/draft":{"key":"12f3f4a1d106","meta":{"bytes":{"display":2764,"original":51474,'
    '"thumb":706},"color":"#40847d","display":[["images/20261125-150001-0001/draft-12f3f4a1d106-153.webp",153,'
    '204]],"h":204,"original":"images/20261125-150001-0001/draft-d9527d0833c0.png","original_format":"PNG",'
    '"thumb":[["images/20261125-150001-0001/draft-12f3f4a1d106-90.webp",90,120],'
    '["images/20261125-150001-0001/draft-12f3f4a1d106-153.webp",153,204]],"w":153},'
    '"original_key":"d9527d0833c0"}}}'
)


SITE = {
    "title": "Test gallery",
    "description": "Fixture works",
    "author": "Tester",
    "base_url": "https://user.github.io/repo/",
    "page_size": 4,
    "thumb_height": 120,
    "image_width": 240,
}


def site_config(root: Path, **site) -> config_mod.Config:
    return config_mod.from_dict({"site": {**SITE, **site}}, root=str(root))


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """`aiimg ARGS` in this process (so that a monkeypatch reaches it): (exit status, stdout + stderr).
    The logging the CLI configures is undone, so that later tests see their own."""
    from pipeline import cli

    logger = logging.getLogger("aiimg")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    monkeypatch.setattr(sys, "argv", ["aiimg", *args])
    try:
        cli.main()
        code = 0
    except SystemExit as exc:
        code = exc.code
    finally:
        for handler in [h for h in logger.handlers if h not in saved[0]]:
            logger.removeHandler(handler)
            handler.close()
        logger.setLevel(saved[1])
        logger.propagate = saved[2]
    out = capsys.readouterr()
    return code, out.out + out.err


def write_config(root: Path, **site) -> Path:
    """aiimg.toml for the CLI, the same site as :func:`site_config` (content/ and output/ beside it)."""
    path = Path(root) / "aiimg.toml"
    lines = [f"{k} = {json.dumps(v)}" for k, v in {**SITE, **site}.items()]  # str, int, bool: JSON is TOML
    path.write_text("[site]\n" + "\n".join(lines) + "\n", encoding="utf-8")
    return path
