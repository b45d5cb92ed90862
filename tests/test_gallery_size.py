"""The size budget: [site] originals (png | webp | none), what every build says takes the room,
the warning before [site] max_size_mb and --strict over it."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
from gallery_fixtures import make_content, recipes_of, run_cli, site_config, write_config
from PIL import Image

from pipeline.content import Content
from pipeline.errors import AiimgError
from pipeline.gallery import MB, BuildReport, _check_budget, build_site
from pipeline.reproduce import recipe_from


def files(out: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(out)): (p.stat().st_size, p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()}


def originals_in(out: Path) -> list[Path]:
    """The published originals: images/<id>/<stem>-<key>.<ext> (no width: not a thumbnail)."""
    return sorted(p for p in out.glob("images/*/*") if re.fullmatch(r"(\d+|draft)-[0-9a-f]{12}\.(png|webp)", p.name))


def work_links(out: Path, wid: str) -> list[str]:
    html = (out / "works" / wid / "index.html").read_text(encoding="utf-8")
    return re.findall(r'href="\.\./\.\./(images/[^"]+)"', html)


@pytest.fixture
def content(tmp_path):
    make_content(tmp_path, 2)
    return tmp_path


def test_webp_originals_are_lossless_and_keep_the_parameters(content):
    cfg = site_config(content, originals="webp")
    report = build_site(cfg)
    assert report.problems == []
    out = cfg.output_dir
    webps = originals_in(out)
    assert len(webps) == 8 and all(p.suffix == ".webp" for p in webps)  # 3 variations + the draft, x2
    assert not list(out.glob("images/*/*.png"))
    store = Content(content / "content")
    for webp in webps:
        wid, stem = webp.parent.name, webp.stem.split("-")[0]
        src = store.draft(wid).image if stem == "draft" else store.variation_path(wid, f"{stem}.png")
        with Image.open(webp) as im, Image.open(src) as orig:
            assert im.format == "WEBP" and im.tobytes() == orig.convert("RGB").tobytes()  # lossless
    wid = store.works()[0]
    # the A1111 parameters travel in EXIF UserComment: aiimg (and A1111's PNG Info) read them back
    recipe = recipes_of(content / "content", wid)[0]
    published = next(p for p in webps if p.parent.name == wid and p.stem.startswith("1-"))
    again = recipe_from(published)
    assert again.prompt == recipe["prompt"] and again.seed == recipe["seed"]
    assert (again.width, again.height) == (recipe["width"], recipe["height"])
    assert f"images/{wid}/{published.name}" in work_links(out, wid)  # the pages link the WebP
    page = (out / "works" / wid / "index.html").read_text(encoding="utf-8")
    assert ">WebP</a></figcaption>" in page and ">PNG</a>" not in page  # the draft's link says what it is


def test_webp_originals_without_metadata_carry_no_parameters(content):
    cfg = site_config(content, originals="webp", strip_metadata=True)
    build_site(cfg)
    with pytest.raises(AiimgError, match="no generation parameters"):
        recipe_from(originals_in(cfg.output_dir)[0])


def test_no_originals_links_the_largest_display_image(content):
    cfg = site_config(content, originals="none")
    report = build_site(cfg)
    out = cfg.output_dir
    assert report.problems == [] and originals_in(out) == []
    assert report.size["originals"] == 0 and "originals" not in report.size_line()
    wid = Content(content / "content").works()[0]
    links = work_links(out, wid)
    assert links and all(link.endswith(".webp") and (out / link).is_file() for link in links)


def test_switching_originals_reencodes_the_originals_alone(content):
    cfg = site_config(content)
    build_site(cfg)
    out = cfg.output_dir
    before = files(out)
    pngs = {p.name for p in originals_in(out)}
    report = build_site(site_config(content, originals="webp"))
    after = files(out)
    assert report.images_made == 8 and report.problems == []  # the 8 originals, nothing else encoded
    thumbs = [rel for rel in before if rel.startswith("images/") and rel.endswith(".webp")]
    assert thumbs and all(after[rel] == before[rel] for rel in thumbs)  # not even rewritten
    assert not pngs & {p.name for p in originals_in(out)} and len(originals_in(out)) == 8
    assert {rel.rsplit("/", 1)[1] for rel in report.removed if rel.endswith(".png")} == pngs
    assert sum(after[rel][0] for rel in after) < sum(before[rel][0] for rel in before)
    build_site(site_config(content, originals="none"))
    assert originals_in(out) == []


def test_every_build_says_the_size_and_what_takes_it(content, monkeypatch, capsys):
    cfg = site_config(content)
    report = build_site(cfg)
    out = cfg.output_dir
    on_disk = files(out)
    assert report.total_bytes == sum(size for size, _ in on_disk.values())  # every byte counted, once
    originals = sum(p.stat().st_size for p in originals_in(out))
    thumbs = sum(size for rel, (size, _) in on_disk.items() if re.search(r"-\d+\.webp$", rel))
    assert report.size["originals"] == originals
    assert report.size["display images"] + report.size["thumbnails"] == thumbs
    search = sum(size for rel, (size, _) in on_disk.items() if rel.startswith(("pagefind/", ".aiimg-search.json")))
    assert report.size["search index"] == search  # 0 without the search extra
    assert report.size["pages"] == report.total_bytes - originals - thumbs - search
    line = report.size_line()
    assert re.fullmatch(
        r"site: \d+\.\d MB \(0% of max_size_mb = 1000\): originals \d\.\d MB, display images \d\.\d MB, "
        r"thumbnails \d\.\d MB, pages \d\.\d MB(, search index \d\.\d MB)?",
        line,
    ), line
    code, said = run_cli(monkeypatch, capsys, "--config", str(write_config(content)), "build")
    assert code == 0 and "nothing to do" in said and line in said  # a no-op build says it too


def test_a_site_over_its_budget_is_warned_about_and_fails_strict(tmp_path, monkeypatch, capsys, caplog):
    content = tmp_path
    make_content(content, 4)
    cfg = site_config(content, max_size_mb=1)  # the 4 works take ~1.5 MB
    with caplog.at_level(logging.WARNING, logger="aiimg"):
        report = build_site(cfg)
    assert report.over_budget
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert re.search(r"output is \d\.\d MB, over \[site\] max_size_mb = 1 \(GitHub Pages", warning)
    assert "originals 1." in warning and '[site] originals = "webp"' in warning and '"none"' in warning
    assert "publish fewer works" in warning
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="aiimg"):
        assert build_site(cfg).noop  # a no-op build warns again: the site is still too large
    assert [r for r in caplog.records if "over [site] max_size_mb = 1" in r.getMessage()]
    path = write_config(content, max_size_mb=1)
    code, said = run_cli(monkeypatch, capsys, "--config", str(path), "build")
    assert code == 0 and "over [site] max_size_mb = 1" in said  # a warning: built, exit 0
    code, said = run_cli(monkeypatch, capsys, "--config", str(path), "build", "--strict")
    assert code == 1 and "aiimg: error: " in said and "is over [site] max_size_mb = 1" in said


def test_the_warning_starts_at_90_percent_and_advises_by_setting(caplog):
    def warned(total: int, **site) -> str:
        cfg = site_config(Path("."), max_size_mb=100, **site).site
        report = BuildReport(Path("output"), size={"originals": total * 3 // 4, "pages": total // 4}, max_size_mb=100)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="aiimg"):
            _check_budget(cfg, report)
        return "\n".join(r.getMessage() for r in caplog.records)

    assert warned(89 * MB) == ""
    near = warned(92 * MB)
    assert "output is 92.0 MB, 92% of [site] max_size_mb = 100" in near and "originals 69.0 MB" in near
    assert '[site] originals = "webp" (lossless, about 40% smaller: ~27.6 MB less' in near
    assert '[site] originals = "none"' not in warned(92 * MB, originals="none")
    assert '"none" (no full-size files: 69.0 MB less)' in warned(92 * MB, originals="webp")
    assert "webp" not in warned(92 * MB, originals="webp").split("To make room")[1]
    assert "[site] avif = false" in warned(92 * MB, avif=True)


def test_no_limit_means_no_warning(content, caplog):
    with caplog.at_level(logging.WARNING, logger="aiimg"):
        report = build_site(site_config(content, max_size_mb=0))
    assert not report.over_budget and caplog.records == []
    assert report.size_line().startswith("site: ") and "max_size_mb" not in report.size_line()
