"""Images with known defects and draft folders made without torch, for the ranking tests.

A *clean* image is a smooth lit background with a sharp, textured subject whose centre sits on
a thirds point; each defect is applied to a copy of it, so a test can ask "does the clean one
outrank its defective copy". The real photos bundled with scikit-learn give a second,
non-synthetic family of clean images.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json

import numpy as np

from pipeline.content import Content, new_draft_id
from pipeline.files import atomic_write_bytes, atomic_write_json
from pipeline.metadata import png_bytes

SIZE = (832, 768)  # (width, height): a real draft size at 640,000 px area


def background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """A soft two-colour gradient with faint large-scale texture (sky, wall, studio backdrop)."""
    top, bottom = rng.uniform(40, 200, 3), rng.uniform(40, 200, 3)
    t = np.linspace(0, 1, h)[:, None, None]
    img = top * (1 - t) + bottom * t + np.zeros((h, w, 3))
    yy, xx = np.mgrid[0:h, 0:w]
    img += 8 * np.sin(xx / rng.uniform(60, 120))[..., None] * np.cos(yy / rng.uniform(60, 120))[..., None]
    return img


def paint_subject(img: np.ndarray, rng: np.random.Generator, cx: float, cy: float, r: float) -> None:
    """A sharp textured blob (striped body + outline + a 'face'), centred at (cx, cy), radius r."""
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    ax, ay = r * rng.uniform(0.8, 1.0), r * rng.uniform(1.0, 1.3)
    d = ((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2
    body = d <= 1.0
    colour, stripe = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    stripes = np.sin((xx + yy) / rng.uniform(3, 7)) > 0
    img[body] = np.where(stripes[body][:, None], colour, stripe)
    img[(d > 1.0) & (d <= 1.12)] = 15.0  # dark outline: a hard edge
    face = ((xx - cx) ** 2 + (yy - cy + 0.4 * ay) ** 2) <= (0.3 * ax) ** 2
    img[face] = rng.uniform(180, 255, 3)


def clean(seed: int, where: str = "thirds", size: tuple[int, int] = SIZE) -> np.ndarray:
    """RGB uint8; ``where``: thirds (a random thirds point), centre, or cut (half out of frame)."""
    rng = np.random.default_rng(seed)
    w, h = size
    img = background(rng, w, h)
    r = min(w, h) * rng.uniform(0.16, 0.22)
    fx, fy = {
        "thirds": (rng.choice([1, 2]) / 3, rng.choice([1, 2]) / 3),
        "centre": (0.5, 0.5),
        "cut": (rng.choice([0.0, 1.0]), rng.uniform(0.35, 0.65)),
    }[where]
    paint_subject(img, rng, fx * w, fy * h, r)
    return np.clip(img, 0, 255).astype(np.uint8)


def blurred(img: np.ndarray, sigma: float = 4.0) -> np.ndarray:
    import cv2

    return cv2.GaussianBlur(img, (0, 0), sigma)


def noisy(img: np.ndarray, sigma: float = 28.0, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, sigma, img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def burnt(img: np.ndarray) -> np.ndarray:
    """What too-high guidance does: contrast and saturation pushed until colours clip."""
    f = img.astype(np.float64)
    grey = f.mean(axis=2, keepdims=True)
    f = grey + (f - grey) * 3.0  # saturation x3
    f = (f - 128) * 1.8 + 150  # contrast and brightness up
    return np.clip(f, 0, 255).astype(np.uint8)


def blank(seed: int, size: tuple[int, int] = SIZE) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w, h = size
    img = np.zeros((h, w, 3)) + rng.uniform(0, 255, 3) + rng.normal(0, 0.8, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def photos() -> list[np.ndarray]:
    """scikit-learn's two bundled photos (china.jpg, flower.jpg), RGB uint8."""
    from sklearn.datasets import load_sample_images

    return [np.ascontiguousarray(i) for i in load_sample_images().images]


def recipe(draft_id: str, width: int, height: int, **extra) -> dict:
    created = dt.datetime.strptime(draft_id[:15], "%Y%m%d-%H%M%S").replace(tzinfo=dt.UTC)
    base = {
        "id": draft_id,
        "created": created.isoformat().replace("+00:00", "Z"),
        "model": {"name": "tiny", "hash": "0000000000"},
        "scheduler": "PNDMScheduler",
        "template": "masterpiece, {red|blue} hair, __outfit__",
        "prompt": "masterpiece, red hair, coat",
        "negative_prompt": "lowres",
        "picks": [],
        "prompt_seed": 1,
        "seed": 1,
        "width": width,
        "height": height,
        "steps": 2,
        "guidance_scale": 7.0,
        "seconds": 0.1,
        "aiimg_version": "0.1.0",
    }
    return {**base, **extra}


_tick = itertools.count()


def make_draft(content: Content, img: np.ndarray, when: dt.datetime | None = None, **extra) -> str:
    """A finished draft from an RGB array: PNG first, draft.json last, as the studio does.

    Without ``when``, each call is one second after the last (ids sort in creation order, as
    they do when drafts take longer than a second)."""
    from PIL import Image

    if when is None:
        when = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=next(_tick))
    draft_id = new_draft_id(when)
    while content.draft_folder(draft_id).exists():
        draft_id = new_draft_id(when)
    folder = content.draft_folder(draft_id)
    folder.mkdir(parents=True)
    rec = recipe(draft_id, img.shape[1], img.shape[0], **extra)
    atomic_write_bytes(folder / "draft.png", png_bytes(Image.fromarray(img), rec, compress_level=1))
    atomic_write_json(folder / "draft.json", rec)
    return draft_id


def recipe_of(content: Content, draft_id: str) -> dict:
    """draft.json as JSON, every key (the scores included) as written."""
    return json.loads(content.draft(draft_id).recipe_path.read_text())


def scores_of(content: Content, draft_id: str) -> dict:
    return recipe_of(content, draft_id)["scores"]


def edit_scores(content: Content, draft_id: str, **changes) -> None:
    """Change keys of a draft's recorded ``scores`` in place, as an older version or a hand would."""
    path = content.draft(draft_id).recipe_path
    recipe = recipe_of(content, draft_id)
    recipe["scores"].update(changes)
    recipe["scores"] = {k: v for k, v in recipe["scores"].items() if v is not DROP}
    path.write_text(json.dumps(recipe))


DROP = object()  # edit_scores(..., key=DROP) removes the key


def png(img: np.ndarray) -> bytes:
    """Uncompressed PNG bytes: their length depends only on the image's dimensions."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", compress_level=0)
    return buf.getvalue()
