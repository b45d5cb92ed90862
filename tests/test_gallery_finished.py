"""A variation finished by [finish] (finishing.py) is published from its finished copy; the raw one stays."""

import json

from gallery_fixtures import make_content, site_config
from PIL import Image

from pipeline.content import Content
from pipeline.gallery import build_site


def test_the_finished_copy_is_what_gets_published(tmp_path):
    make_content(tmp_path, 1)
    content = Content(tmp_path / "content")
    (wid,) = content.works()
    raw = content.variation_path(wid, "1.png")
    finished = content.finished_path(wid, "1.png")
    finished.parent.mkdir()
    with Image.open(raw) as img:
        img.convert("RGB").resize((img.width // 2, img.height // 2)).save(finished)
    work = json.loads(content.work_path(wid).read_text())
    work["variations"][0]["finished"] = {"file": "finished/1.png", "steps": [{"step": "resize"}]}
    content.work_path(wid).write_text(json.dumps(work))
    cfg = site_config(tmp_path)
    build_site(cfg)
    (published,) = cfg.output_dir.glob(f"images/{wid}/1-*.png")
    assert published.read_bytes() == finished.read_bytes() and raw.read_bytes() != finished.read_bytes()
    (other,) = cfg.output_dir.glob(f"images/{wid}/2-*.png")  # not finished: its raw file, as before
    assert other.read_bytes() == content.variation_path(wid, "2.png").read_bytes()
