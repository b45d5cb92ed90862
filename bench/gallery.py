"""Gallery benchmark: `aiimg build` against sigal and against a floor script, side by side.

    .venv/bin/python bench/gallery.py               # 300 works x 3 variations (+ drafts), ~1 MP
    .venv/bin/python bench/gallery.py --works 20    # a quick run

Measures (wall time of each whole command, Python start-up included):
  1. cold build: aiimg vs sigal (WebP output, same source PNGs) vs a floor script that only
     decodes, resizes and encodes the same images into the same sizes with as many processes;
  2. no-op rebuild (aiimg vs sigal, best of 3 runs each) and +1 work rebuild (aiimg);
  3. first-page weight: bytes the browser (Debian's chromium) loads for the first screen of the
     index at 1366x768 (HTML + CSS + JS + images), aiimg and sigal.
The synthetic content is generated once and cached under bench/.cache/gallery/ (gitignored);
results go to bench/results/gallery.json. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

CACHE = REPO / "bench/.cache/gallery"
RESULTS = REPO / "bench/results/gallery.json"
SIZES = [(1024, 1024), (832, 1216), (1216, 832), (896, 1152), (1152, 896)]  # ~1 MP, multiples of 64
VIEWPORT = {"width": 1366, "height": 768}
GOALS = {"cold_vs_sigal": 0.8, "cold_vs_floor": 1.3, "noop_vs_sigal": 0.3, "plus_one_s": 1.5, "first_page_kb": 400}


def main() -> None:
    args = _args()
    if args.floor:
        return floor(Path(args.floor[0]), Path(args.floor[1]))
    root = CACHE / f"n{args.works}"
    # 1. the synthetic content (once) and the tools
    _ensure_content(root, args.works)
    _ensure_sigal()
    _write_configs(root)
    # 2. cold builds: floor, sigal, aiimg (each from an empty output folder)
    r = {"works": args.works, "images": len(_sources(root / "content")), "cores": os.cpu_count()}
    _read_all(root / "content")  # every tool then finds the sources in the page cache alike
    r["floor_cold_s"] = _timed(root, "floor", _floor_cmd(root))
    r["sigal_cold_s"] = _timed(root, "sigal", _sigal_cmd(root))
    r["aiimg_cold_s"] = _timed(root, "output", _aiimg_cmd(root))
    # 3. rebuilds: nothing changed; then one more work
    r["sigal_noop_s"] = min(_timed(root, None, _sigal_cmd(root)) for _ in range(3))  # best of 3, both
    r["aiimg_noop_s"] = min(_timed(root, None, _aiimg_cmd(root)) for _ in range(3))
    r["aiimg_plus_one_s"] = _plus_one(root, args.works)
    # 4. what a visitor's browser loads for the first screen
    r["aiimg_first_page_kb"] = first_page_kb(root / "output")
    r["sigal_first_page_kb"] = first_page_kb(root / "sigal")
    _report(r)


def _args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--works", type=int, default=300, help="works of 3 variations each (default 300)")
    p.add_argument("--floor", nargs=2, metavar=("LIST", "OUT"), help=argparse.SUPPRESS)
    return p.parse_args()


# -- content ---------------------------------------------------------------------------------


def _ensure_content(root: Path, works: int) -> None:
    """works 0..N-1 in content/, and work N in extra/ for the +1 rebuild; generated in parallel."""
    done = root / "content.done"
    if done.is_file():
        return
    shutil.rmtree(root, ignore_errors=True)
    print(f"generating {works} works x 3 variations of ~1 MP (once; cached in {root}) ...", flush=True)
    jobs = [(root / "content", i) for i in range(works)] + [(root / "extra", works)]
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        list(pool.map(_make_work, jobs, chunksize=4))
    done.write_text("ok\n")


def _make_work(job: tuple[Path, int]) -> str:
    from gallery_fixtures import add_work

    content_dir, i = job
    return add_work(content_dir, i, size=SIZES[i % len(SIZES)])


def _read_all(content_dir: Path) -> None:
    for path in content_dir.rglob("*"):
        if path.is_file():
            path.read_bytes()


def _sources(content_dir: Path) -> list[Path]:
    return sorted(content_dir.glob("works/*/*.png")) + sorted(content_dir.glob("drafts/*/*/draft.png"))


# -- the three builders ----------------------------------------------------------------------


def _ensure_sigal() -> None:
    if shutil.which("sigal", path=str(Path(sys.executable).parent)):
        return
    print("installing sigal into this venv (pip install sigal) ...", flush=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "sigal"], check=True)


def _write_configs(root: Path) -> None:
    (root / "aiimg.toml").write_text(
        'content = "content"\noutput = "output"\n[site]\ntitle = "Bench"\nbase_url = "https://user.github.io/bench/"\n'
    )
    # sigal with the same work where it has one: a WebP display image fitting 1280 px (aiimg's
    # image_width) and a WebP thumbnail 280 px high (aiimg's thumb_height), from the same PNGs
    (root / "sigal.conf.py").write_text(
        'img_format = "WEBP"\nimg_size = (1280, 1280)\nthumb_size = (1280, 280)\nthumb_fit = False\n'
        'keep_orig = False\nwrite_html = True\ntitle = "Bench"\n'
    )
    src = root / "sigal-src"
    if not src.is_dir():
        for path in _sources(root / "content"):
            album = src / path.parent.name  # one album per work (the draft joins its work's)
            album.mkdir(parents=True, exist_ok=True)
            os.link(path, album / path.name)
    (root / "floor.list").write_text("\n".join(str(p) for p in _sources(root / "content")) + "\n")


def _aiimg_cmd(root: Path) -> list[str]:
    return [sys.executable, "-m", "pipeline.cli", "--config", str(root / "aiimg.toml"), "build"]


def _sigal_cmd(root: Path) -> list[str]:
    sigal = str(Path(sys.executable).parent / "sigal")
    return [sigal, "build", "-c", str(root / "sigal.conf.py"), str(root / "sigal-src"), str(root / "sigal")]


def _floor_cmd(root: Path) -> list[str]:
    return [sys.executable, __file__, "--floor", str(root / "floor.list"), str(root / "floor")]


def _timed(root: Path, clean: str | None, cmd: list[str]) -> float:
    if clean:
        shutil.rmtree(root / clean, ignore_errors=True)
    start = time.perf_counter()
    run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if run.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}")
    print(f"  {seconds:7.2f} s  {Path(cmd[0]).name} {' '.join(cmd[1:3])} ...", flush=True)
    return round(seconds, 3)


def _plus_one(root: Path, works: int) -> float:
    """Copy the extra work (its draft, then the work) into content/, rebuild, take it out again."""
    from pipeline.content import Content

    extra, content = Content(root / "extra"), Content(root / "content")
    wid = extra.works()[0]
    pairs = [(extra.draft_folder(wid), content.draft_folder(wid)), (extra.work_folder(wid), content.work_folder(wid))]
    for src, dst in pairs:
        shutil.copytree(src, dst)
    try:
        return _timed(root, None, _aiimg_cmd(root))
    finally:
        for _, dst in pairs:
            shutil.rmtree(dst)
        subprocess.run(_aiimg_cmd(root), cwd=REPO, capture_output=True, check=True)


# -- the floor: decode, resize, encode; nothing else -----------------------------------------


def floor(listing: Path, out: Path) -> None:
    """The same outputs as aiimg's images (WebP at the same sizes, quality and method), with
    as many processes, and nothing else: no hashing, no manifest, no pages."""
    out.mkdir(parents=True, exist_ok=True)
    sources = listing.read_text().split()
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        list(pool.map(_floor_one, sources, [str(out)] * len(sources), chunksize=1))


def _floor_one(src: str, out: str) -> None:
    from PIL import Image

    from pipeline.gallery.images import WEBP_METHOD  # the same encoder effort as aiimg

    with Image.open(src) as im:
        image = im.convert("RGB")
    w, h = image.size
    widths, heights = {min(1280, w), min(2560, w)}, {min(280, h), min(560, h)}
    sizes = {(t, max(1, round(h * t / w))) for t in widths} | {(max(1, round(w * t / h)), t) for t in heights}
    current, stem = image, src.replace("/", "_")
    for size in sorted(sizes, reverse=True):
        if size != current.size:
            current = current.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
        current.save(f"{out}/{stem}-{size[0]}.webp", "WEBP", quality=80, method=WEBP_METHOD)


# -- first-page weight in a real browser -----------------------------------------------------


def first_page_kb(site: Path) -> float:
    from gallery_fixtures import CHROMIUM, CHROMIUM_ARGS
    from playwright.sync_api import sync_playwright

    from pipeline.gallery.serve import start_server

    server = start_server(site, 0)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport=VIEWPORT)
            sizes: list[int] = []
            page.on("requestfinished", lambda req: sizes.append(_size(req)))
            page.goto(f"http://127.0.0.1:{server.server_address[1]}/", wait_until="networkidle")
            browser.close()
    finally:
        server.shutdown()
        server.server_close()
    return round(sum(sizes) / 1024, 1)


def _size(request) -> int:
    s = request.sizes()
    return s["responseBodySize"] + s["responseHeadersSize"]


# -- report ----------------------------------------------------------------------------------


def _report(r: dict) -> None:
    r["cold_vs_sigal"] = round(r["aiimg_cold_s"] / r["sigal_cold_s"], 2)
    r["cold_vs_floor"] = round(r["aiimg_cold_s"] / r["floor_cold_s"], 2)
    r["noop_vs_sigal"] = round(r["aiimg_noop_s"] / r["sigal_noop_s"], 2)
    rows = [
        (
            "cold build",
            f"aiimg {r['aiimg_cold_s']:.2f} s | sigal {r['sigal_cold_s']:.2f} s | floor {r['floor_cold_s']:.2f} s",
            "",
        ),
        ("  aiimg / sigal", f"{r['cold_vs_sigal']:.2f}x", _goal(r["cold_vs_sigal"], "cold_vs_sigal", "x")),
        ("  aiimg / floor", f"{r['cold_vs_floor']:.2f}x", _goal(r["cold_vs_floor"], "cold_vs_floor", "x")),
        ("no-op rebuild", f"aiimg {r['aiimg_noop_s']:.2f} s | sigal {r['sigal_noop_s']:.2f} s", ""),
        ("  aiimg / sigal", f"{r['noop_vs_sigal']:.2f}x", _goal(r["noop_vs_sigal"], "noop_vs_sigal", "x")),
        ("+1 work rebuild", f"aiimg {r['aiimg_plus_one_s']:.2f} s", _goal(r["aiimg_plus_one_s"], "plus_one_s", " s")),
        (
            "first-page weight",
            f"aiimg {r['aiimg_first_page_kb']:.0f} KB | sigal {r['sigal_first_page_kb']:.0f} KB",
            _goal(r["aiimg_first_page_kb"], "first_page_kb", " KB"),
        ),
    ]
    print(f"\n{r['works']} works, {r['images']} source PNGs, {r['cores']} cores")
    for name, value, goal in rows:
        print(f"{name:<18} {value:<58} {goal}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(r, indent=2) + "\n")
    print(f"\nwritten {RESULTS.relative_to(REPO)}")


def _goal(value: float, key: str, unit: str) -> str:
    goal = GOALS[key]
    return f"goal <= {goal}{unit}: {'met' if value <= goal else 'MISSED'}"


if __name__ == "__main__":
    main()
