"""Gallery benchmark: `aiimg build` against sigal and against a floor script, side by side.

    .venv/bin/python bench/gallery.py               # 300 works x 3 variations (+ drafts), ~1 MP
    .venv/bin/python bench/gallery.py --works 20    # a quick run
    .venv/bin/python bench/gallery.py --scale       # 300 .. 10,000 works of ~0.25 MP (see below)
    .venv/bin/python bench/gallery.py --scale --sizes 300,1000 --no-sigal   # a quicker scale run

Measures (wall time of each whole command, Python start-up included):
  1. cold build: aiimg vs sigal (WebP output, same source PNGs) vs a floor script that only
     decodes, resizes and encodes the same images into the same sizes with as many processes;
  2. no-op rebuild (aiimg vs sigal, best of 3 runs each) and +1 work rebuild (aiimg);
  3. first-page weight: bytes the browser (Debian's chromium) loads for the first screen of the
     index at 1366x768 (HTML + CSS + JS + images), aiimg and sigal.
The synthetic content is generated once and cached under bench/.cache/gallery/ (gitignored);
results go to bench/results/gallery.json. See bench/README.md.

--scale: how aiimg grows with the number of works (300, 1,000, 3,000, 10,000 by default), on
self-contained works (only content/works, as a repository that publishes has it) of 3
variations + the draft at ~0.25 MP. At each size: cold build (and its peak memory: the PSS of
the build and its worker processes, sampled every 0.1 s), no-op rebuild (best of 3; sigal's
too), +1 work, the bytes published per work with originals = "png" and "webp" (and "none"),
and, at the largest size, what the +1 and no-op times are made of. Results go to
bench/results/gallery-scale.json. The search index (Pagefind, the `search` extra) is left out
of these builds, as `pip install .` leaves it out: its size and time are measured on their own,
last at each size (`--no-search` skips them): a build with the extra (every page gains the
search box, Pagefind indexes every work page), then one more work with it (Pagefind is not
incremental: it indexes every work page again), Pagefind's own wall and CPU time timed apart.
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
SCALE = CACHE / "scale"
SCALE_SIZES = [(512, 512), (448, 576), (576, 448), (384, 640), (640, 384)]  # ~0.25 MP, multiples of 64
VIEWPORT = {"width": 1366, "height": 768}
GOALS = {"cold_vs_sigal": 0.8, "cold_vs_floor": 1.3, "noop_vs_sigal": 0.3, "plus_one_s": 1.5, "first_page_kb": 400}
SCALE_RESULTS = REPO / "bench/results/gallery-scale.json"
SCALE_GOALS = {"noop_s": 1.0, "noop_vs_sigal": 0.3, "plus_one_s": 2.0, "peak_mb": 500, "webp_vs_png": 0.7}
# the builds of the scale bench run as `pip install .` makes them: without the search extra
NO_SEARCH = "import sys; sys.modules['pagefind'] = None; sys.argv[0] = 'aiimg'; from pipeline.cli import main; main()"


def main() -> None:
    args = _args()
    if args.floor:
        return floor(Path(args.floor[0]), Path(args.floor[1]))
    if args.scale:
        sizes = sorted(int(n) for n in args.sizes.split(","))
        sigal = [] if args.no_sigal else [int(n) for n in (args.sigal_sizes or str(sizes[-1])).split(",")]
        return scale(sizes, sigal, args.originals_upto, not args.no_search)
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
    p.add_argument("--scale", action="store_true", help="the scale run: 300 .. 10,000 works of ~0.25 MP")
    p.add_argument("--sizes", default="300,1000,3000,10000", help="--scale: the numbers of works (default %(default)s)")
    p.add_argument("--no-sigal", action="store_true", help="--scale: leave sigal out (its cold builds take long)")
    p.add_argument("--no-search", action="store_true", help="--scale: leave the search index (Pagefind) out")
    p.add_argument("--sigal-sizes", help="--scale: the sizes sigal runs at (default: the largest)")
    p.add_argument(
        "--originals-upto",
        type=int,
        default=3000,
        help="--scale: measure originals = webp (re-encodes every original) up to this size (default %(default)s)",
    )
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


# -- the scale set: 10,000 works of small sources -------------------------------------------


def _ensure_scale_content(works: int) -> Path:
    """Works 0..N (N+1 of them: work N is the +1 of the largest size) of ~0.25 MP in one master
    folder, self-contained (only content/works, as a repository that publishes has it).
    Generated once, in parallel; an interrupted run resumes where it stopped (a work exists
    once its work.json does)."""
    from gallery_fixtures import work_id

    master = SCALE / "all" / "content"
    todo = [i for i in range(works + 1) if not (master / "works" / work_id(i) / "work.json").is_file()]
    if todo:
        print(f"generating {len(todo)} works x 3 variations of ~0.25 MP (once; cached in {master}) ...", flush=True)
        with ProcessPoolExecutor(os.cpu_count()) as pool:
            for n, _ in enumerate(pool.map(_make_scale_work, [(master, i) for i in todo], chunksize=16), 1):
                if n % 500 == 0:
                    print(f"  {n}/{len(todo)}", flush=True)
    return master


def _make_scale_work(job: tuple[Path, int]) -> str:
    from gallery_fixtures import add_work

    content_dir, i = job
    return add_work(content_dir, i, size=SCALE_SIZES[i % len(SCALE_SIZES)], in_work=True, in_drafts=False)


def _subset(master: Path, root: Path, works: int) -> Path:
    """root/content/works: hard links to the master's first ``works`` works (no copy, no
    encode: a size costs nothing on disk). Links made before are kept, extra works removed."""
    from gallery_fixtures import work_id

    content = root / "content"
    wanted = {work_id(i) for i in range(works)}
    (content / "works").mkdir(parents=True, exist_ok=True)
    for folder in (content / "works").iterdir():
        if folder.name not in wanted:
            shutil.rmtree(folder)
    for wid in sorted(wanted):
        _link_tree(master / "works" / wid, content / "works" / wid)
    return content


def _link_tree(src: Path, dst: Path) -> None:
    if dst.is_dir():
        return
    tmp = dst.with_name(dst.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in src.iterdir():
        os.link(f, tmp / f.name)
    tmp.rename(dst)


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


# -- the scale run ---------------------------------------------------------------------------


def scale(sizes: list[int], sigal: list[int], originals_upto: int, search: bool = True) -> None:
    """Every measure at every size, smallest first; each size's output is deleted after it is
    measured (10,000 works of PNG originals are ~14 GB). originals = "webp" re-encodes every
    original (~0.1 s each here): measured up to ``originals_upto`` works (bytes per work do not
    depend on how many works there are); sigal at the sizes in ``sigal``."""
    master = _ensure_scale_content(max(sizes))
    if sigal:
        _ensure_sigal()
    rows = []
    for works in sizes:
        print(f"\n{works} works", flush=True)
        rows.append(_scale_one(master, works, works in sigal, works == max(sizes), works <= originals_upto, search))
        _save_scale(rows)
    _report_scale(rows)


def _scale_one(master: Path, works: int, sigal: bool, breakdown: bool, webp: bool, search: bool) -> dict:
    from gallery_fixtures import work_id

    root = SCALE / f"n{works}"
    content = _subset(master, root, works)
    extra = content / "works" / work_id(works)  # the next work: the +1
    r = {"works": works, "images": 4 * works, "source_mb": round(_bytes(content) / 1e6, 1)}
    _scale_config(root, "png")
    shutil.rmtree(root / "output", ignore_errors=True)
    shutil.rmtree(content / ".aiimg", ignore_errors=True)
    _read_all(content)  # the sources in the page cache, as for every other measure
    r["cold_s"], r["peak_mb"] = _peak(_scale_cmd(root), root)
    r["png_bytes"] = _bytes(root / "output")
    r["manifest_kb"] = round((root / "output/.aiimg-build.json").stat().st_size / 1000)
    r["noop_s"] = min(_timed(root, None, _scale_cmd(root)) for _ in range(3))
    r["plus_one_runs"] = []
    for _ in range(3):  # the median of 3: this machine is noisy
        _link_tree(master / "works" / extra.name, extra)
        r["plus_one_runs"].append(_timed(root, None, _scale_cmd(root)))
        shutil.rmtree(extra)
        _timed(root, None, _scale_cmd(root))  # back to N works (the extra's files removed as stale)
    r["plus_one_s"] = sorted(r["plus_one_runs"])[1]
    if breakdown:  # what those times are made of: the same +1 again, then a no-op, steps timed
        _link_tree(master / "works" / extra.name, extra)
        r["plus_one_breakdown"] = _breakdown(root)
        shutil.rmtree(extra)
        _timed(root, None, _scale_cmd(root))
        r["noop_breakdown"] = _breakdown(root)
    for originals in ("webp", "none") if webp else ("none",):  # only the originals are made again
        _scale_config(root, originals)
        r[f"{originals}_switch_s"] = _timed(root, None, _scale_cmd(root))
        r[f"{originals}_bytes"] = _bytes(root / "output")
    for kind in ("png", "webp", "none") if webp else ("png", "none"):
        r[f"{kind}_kb_per_work"] = round(r[f"{kind}_bytes"] / works / 1000, 1)
    if webp:
        r["webp_vs_png"] = round(r["webp_bytes"] / r["png_bytes"], 3)
    if search:  # last: the site keeps the search box and the index until it is deleted
        _scale_config(root, "none")
        r["search"] = _search(root, master, extra)
    shutil.rmtree(root / "output")
    if sigal:
        _sigal_tree(content, root / "sigal-src")
        (root / "sigal.conf.py").write_text((CACHE / "sigal.conf.py").read_text())
        r["sigal_cold_s"] = _timed(root, "sigal", _sigal_cmd(root))
        r["sigal_noop_s"] = min(_timed(root, None, _sigal_cmd(root)) for _ in range(3))
        r["noop_vs_sigal"] = round(r["noop_s"] / r["sigal_noop_s"], 3)
        shutil.rmtree(root / "sigal")
    print(json.dumps({k: v for k, v in r.items() if "breakdown" not in k}), flush=True)
    return r


def _scale_config(root: Path, originals: str) -> None:
    (root / "aiimg.toml").write_text(
        'content = "content"\noutput = "output"\n[site]\ntitle = "Bench"\n'
        f'base_url = "https://user.github.io/bench/"\noriginals = "{originals}"\nmax_size_mb = 0\n'
    )
    CACHE.mkdir(parents=True, exist_ok=True)
    (CACHE / "sigal.conf.py").write_text(
        'img_format = "WEBP"\nimg_size = (1280, 1280)\nthumb_size = (1280, 280)\nthumb_fit = False\n'
        'keep_orig = False\nwrite_html = True\ntitle = "Bench"\n'
    )


def _scale_cmd(root: Path) -> list[str]:
    return [sys.executable, "-c", NO_SEARCH, "--config", str(root / "aiimg.toml"), "build"]


def _sigal_tree(content: Path, src: Path) -> None:
    """One album per work (its variations and draft), hard links; made again for each size."""
    shutil.rmtree(src, ignore_errors=True)
    for folder in sorted((content / "works").iterdir()):
        album = src / folder.name
        album.mkdir(parents=True)
        for png in folder.glob("*.png"):
            os.link(png, album / png.name)


def _bytes(folder: Path) -> int:
    return sum(e.stat().st_size for e in _walk(folder))


def _walk(folder: Path):
    for entry in os.scandir(folder):
        if entry.is_dir(follow_symlinks=False):
            yield from _walk(Path(entry.path))
        elif entry.is_file(follow_symlinks=False):
            yield entry


def _peak(cmd: list[str], root: Path) -> tuple[float, float]:
    """(wall seconds, peak MB) of a command: the largest sum, over time, of the proportional set
    sizes (PSS: shared pages split between the processes that share them, so forked workers are
    not counted twice) of the process and all its children, sampled every 0.1 s."""
    import psutil

    start = time.perf_counter()
    proc = psutil.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peak = 0
    while proc.poll() is None:
        total = 0
        for p in [proc, *proc.children(recursive=True)]:
            try:
                total += p.memory_full_info().pss
            except psutil.Error:
                continue
        peak = max(peak, total)
        time.sleep(0.1)
    seconds = time.perf_counter() - start
    out, err = proc.communicate()
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.decode()[-2000:]}\n{err.decode()[-2000:]}")
    print(f"  {seconds:7.2f} s  cold build, peak {peak / 1e6:.0f} MB", flush=True)
    return round(seconds, 2), round(peak / 1e6, 1)


BREAKDOWN = """
import json, sys, time
sys.modules["pagefind"] = None
import pipeline.gallery as g
from pipeline import config
from pipeline.gallery import cache, collect, images, output, render, stamp
spent = {}
def timed(module, name, label):
    real = getattr(module, name)
    def wrapper(*a, **k):
        t = time.perf_counter()
        try:
            return real(*a, **k)
        finally:
            spent[label] = spent.get(label, 0) + time.perf_counter() - t
    setattr(module, name, wrapper)
for module, name, label in [
    (stamp, "works_snapshot", "works snapshot (stat every file of content/works)"),
    (stamp, "output_changes", "output/ folders as the last build left them? (a stat each)"),
    (stamp, "unchanged", "stamp check (settings, templates, the snapshot's hash)"),
    (g, "clean_debris", "temp files of killed builds (changed folders of output/)"),
    (g, "read_manifest", "read the manifest (its header; a line per work, unparsed)"),
    (cache, "read", "read the works cache"),
    (g, "collect", "the works: unchanged ones from the cache, the others read"),
    (images, "encode_all", "images: works taken whole, the others hashed, reused or encoded"),
    (cache.WorksCache, "save", "write the works cache"),
    (render, "render_site", "render: page keys, pages whose inputs changed"),
    (output.Output, "remove_stale", "remove stale files"),
    (g, "write_manifest", "write the manifest"),
    (stamp, "save", "save the stamp (stat output/ folders)"),
]:
    timed(module, name, label)
t0 = time.perf_counter()
report = g.build_site(config.load(sys.argv[1]))
spent["total (in process, after imports)"] = time.perf_counter() - t0
print(json.dumps({k: round(v, 3) for k, v in spent.items()}))
"""


SEARCH = """
import json, resource, sys, time
from pipeline import config
from pipeline.gallery import build_site, search
assert search.available(), "the search extra is not installed: pip install -e '.[search]'"
spent = {"pagefind_s": 0.0, "pagefind_cpu_s": 0.0}
real = search._run
def run(*a):
    t, cpu = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        return real(*a)
    finally:
        now = resource.getrusage(resource.RUSAGE_CHILDREN)
        spent["pagefind_s"] += time.perf_counter() - t
        spent["pagefind_cpu_s"] += now.ru_utime + now.ru_stime - cpu.ru_utime - cpu.ru_stime
search._run = run
t = time.perf_counter()
report = build_site(config.load(sys.argv[1]))
spent["build_s"] = time.perf_counter() - t
spent["index_bytes"] = report.size.get("search index", 0)
print(json.dumps({k: round(v, 3) for k, v in spent.items()}))
"""


def _search(root: Path, master: Path, extra: Path) -> dict:
    """The search extra on the built site: a build that turns it on (every page again, Pagefind
    over every work page), then one more work with it; Pagefind's time and the index per 1,000
    works."""
    on = _search_build(root)
    _link_tree(master / "works" / extra.name, extra)
    plus_one = _search_build(root)
    shutil.rmtree(extra)
    works = int(root.name.removeprefix("n"))
    per_k = works / 1000
    r = {"turn_on": on, "plus_one": plus_one}
    r["index_kb_per_1000"] = round(on["index_bytes"] / 1000 / per_k, 1)
    r["pagefind_s_per_1000"] = round(plus_one["pagefind_s"] / per_k, 2)
    r["pagefind_cpu_s_per_1000"] = round(plus_one["pagefind_cpu_s"] / per_k, 2)
    print(f"    search: index {on['index_bytes'] / 1e6:.1f} MB; +1 work {plus_one['build_s']:.2f} s of which "
          f"Pagefind {plus_one['pagefind_s']:.2f} s ({plus_one['pagefind_cpu_s']:.2f} s CPU)", flush=True)  # fmt: skip
    return r


def _search_build(root: Path) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", SEARCH, str(root / "aiimg.toml")], cwd=REPO, capture_output=True, text=True
    )
    if done.returncode:
        raise SystemExit(f"search build failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _breakdown(root: Path) -> dict:
    """The steps of one build of ``root`` as it stands, timed in a child process (imports and
    Python start-up excluded)."""
    done = subprocess.run(
        [sys.executable, "-c", BREAKDOWN, str(root / "aiimg.toml")], cwd=REPO, capture_output=True, text=True
    )
    if done.returncode:
        raise SystemExit(f"breakdown failed:\n{done.stderr[-3000:]}")
    steps = json.loads(done.stdout.strip().splitlines()[-1])
    for name, seconds in steps.items():
        print(f"    {seconds:7.3f} s  {name}", flush=True)
    return steps


def _save_scale(rows: list[dict]) -> None:
    SCALE_RESULTS.parent.mkdir(parents=True, exist_ok=True)
    SCALE_RESULTS.write_text(json.dumps({"cores": os.cpu_count(), "sizes": rows}, indent=2) + "\n")


def _report_scale(rows: list[dict]) -> None:
    big = rows[-1]
    print(f"\n{'works':>7} {'cold s':>8} {'peak MB':>8} {'no-op s':>8} {'sigal no-op s':>14} {'+1 s':>6} "
          f"{'KB/work png':>12} {'webp':>7} {'none':>7} {'webp/png':>9} {'manifest KB':>12}")  # fmt: skip
    for r in rows:
        sigal = f"{r['sigal_noop_s']:.2f}" if "sigal_noop_s" in r else "-"
        webp = f"{r['webp_kb_per_work']:.0f}" if "webp_kb_per_work" in r else "-"
        ratio = f"{r['webp_vs_png']:.2f}" if "webp_vs_png" in r else "-"
        print(f"{r['works']:>7} {r['cold_s']:>8.1f} {r['peak_mb']:>8.0f} {r['noop_s']:>8.2f} {sigal:>14} "
              f"{r['plus_one_s']:>6.2f} {r['png_kb_per_work']:>12.0f} {webp:>7} "
              f"{r['none_kb_per_work']:>7.0f} {ratio:>9} {r['manifest_kb']:>12}")  # fmt: skip
    checks = [
        ("no-op rebuild", big["noop_s"], "noop_s", " s"),
        ("+1 work", big["plus_one_s"], "plus_one_s", " s"),
        ("cold build peak memory", big["peak_mb"], "peak_mb", " MB"),
    ]
    with_webp = [r for r in rows if "webp_vs_png" in r]
    if with_webp:
        checks.append(
            (f"webp / png bytes ({with_webp[-1]['works']})", with_webp[-1]["webp_vs_png"], "webp_vs_png", "x")
        )
    if "noop_vs_sigal" in big:
        checks.insert(1, ("no-op / sigal's", big["noop_vs_sigal"], "noop_vs_sigal", "x"))
    _report_search(rows)
    print(f"\nat {big['works']} works:")
    for name, value, key, unit in checks:
        goal = SCALE_GOALS[key]
        print(f"  {name:<28} {value}{unit:<4} goal <= {goal}{unit}: {'met' if value <= goal else 'MISSED'}")
    print(f"\nwritten {SCALE_RESULTS.relative_to(REPO)}")


def _report_search(rows: list[dict]) -> None:
    rows = [r for r in rows if "search" in r]
    if not rows:
        return
    print(f"\n{'works':>7} {'index MB':>9} {'KB/1000 works':>14} {'turn on s':>10} {'+1 s':>6} "
          f"{'Pagefind s':>11} {'CPU s':>6} {'s/1000 works':>13}")  # fmt: skip
    for r in rows:
        on, plus, per = r["search"]["turn_on"], r["search"]["plus_one"], r["search"]
        print(f"{r['works']:>7} {on['index_bytes'] / 1e6:>9.2f} {per['index_kb_per_1000']:>14.0f} "
              f"{on['build_s']:>10.1f} {plus['build_s']:>6.2f} {plus['pagefind_s']:>11.2f} "
              f"{plus['pagefind_cpu_s']:>6.2f} {per['pagefind_s_per_1000']:>13.2f}")  # fmt: skip


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
