"""The default scorer: technical checks and composition, offline, no model weights, no torch.

Everything is measured on a working copy whose long side is ``WORK`` pixels (smaller images as
they are), so a threshold means the same at any draft size. Sub-scores (all in draft.json under
``scores.scorers.default.sub``), each in [0, 1] where 1 is best unless said otherwise:

- ``sharpness``   edge crispness: |Laplacian| / |gradient| in the most detailed tiles (raw, >0)
- ``noise``       noise sigma in grey levels, from the flattest tiles (raw, lower is better)
- ``clipped_high`` / ``clipped_low``  fraction of pixels burnt to white / crushed to black
- ``oversaturated`` fraction of pixels at full saturation and brightness (too-high guidance)
- ``contrast``    grey-level standard deviation (raw)
- ``placement``   subject centroid near a thirds point (1) or the centre (0.75), else lower
- ``subject_size`` salient area against the 3%..35% band that reads as "a subject"
- ``frame_cut``   longest run of the subject's mask along one side of the frame, as a fraction
- ``technical`` / ``composition``  the two halves of the score

The score is ``0.6 * technical + 0.4 * composition`` in [0, 1]; a blank image is NaN (hard
reject). Flags: blank, blurry, noisy, overexposed, underexposed, oversaturated, subject_cut.
The subject comes from OpenCV contrib's spectral-residual saliency (offline, ~1 ms).
"""

from __future__ import annotations

import math

from pipeline.ranking.scorers import Item, Result

WORK = 512  # long side of the working copy, pixels
TILES = 8  # tiles per side for the local statistics
LIMITS = {  # flag thresholds, calibrated on tests/ranking_fixtures.py and real photos
    "blank_contrast": 3.0,  # grey std below this = nothing there (a flat colour, faint noise)
    "blurry": 0.33,  # sharpness below this = edges wider than ~2 px at WORK size
    "noisy": 4.0,  # noise sigma (grey levels at WORK size) above this
    "overexposed": 0.08,  # more than 8% of the pixels burnt to white
    "underexposed": 0.35,  # more than 35% crushed to black (dark art is legitimate)
    "oversaturated": 0.12,  # more than 12% of the pixels at near-full saturation and brightness
    "subject_cut": 0.15,  # the subject runs along 15% of one side of the frame
}
THIRDS = [(a, b) for a in (1 / 3, 2 / 3) for b in (1 / 3, 2 / 3)]


class DefaultScorer:
    """Technical checks + saliency composition. Stateless; safe to call from any thread."""

    name = "default"

    def score(self, items: list[Item]) -> list[Result]:
        return [self.score_one(item) for item in items]

    def score_one(self, item: Item) -> Result:
        rgb = item.pixels()
        if rgb is None:
            return Result(math.nan, {}, ["unreadable"])
        return judge(measure(rgb))


# -- measuring ---------------------------------------------------------------------------------


def working_copy(rgb):
    """(grey float32, BGR uint8) at WORK pixels on the long side."""
    import cv2

    h, w = rgb.shape[:2]
    s = min(1.0, WORK / max(h, w))  # never enlarge: upscaled pixels would fake crisp edges
    small = cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    bgr = cv2.cvtColor(small, cv2.COLOR_RGB2BGR)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).astype("float32"), bgr


def measure(rgb) -> dict:
    grey, bgr = working_copy(rgb)
    m = {"contrast": float(grey.std())}
    m.update(sharpness_noise(grey))
    m.update(exposure(grey, bgr))
    m.update(subject(bgr))
    return m


def tiles(a):
    """View of ``a`` as TILES x TILES blocks (edges trimmed): shape (TILES*TILES, th, tw)."""
    th, tw = a.shape[0] // TILES, a.shape[1] // TILES
    a = a[: th * TILES, : tw * TILES]
    return a.reshape(TILES, th, TILES, tw).swapaxes(1, 2).reshape(TILES * TILES, th, tw)


def sharpness_noise(grey) -> dict:
    import cv2
    import numpy as np

    lap = np.abs(cv2.Laplacian(grey, cv2.CV_32F, ksize=3))
    grad = np.abs(cv2.Sobel(grey, cv2.CV_32F, 1, 0)) + np.abs(cv2.Sobel(grey, cv2.CV_32F, 0, 1))
    lap_t, grad_t = tiles(lap).mean(axis=(1, 2)), tiles(grad).mean(axis=(1, 2))
    # crispness where the detail is: a blurred edge halves |lap|/|grad| when its width doubles
    top = np.argsort(grad_t)[-max(1, len(grad_t) // 8) :]
    sharp = float(lap_t[top].sum() / max(grad_t[top].sum(), 1e-6))
    # noise lives everywhere, texture does not: the flattest tiles' residual is the noise
    resid = grey - cv2.medianBlur(grey, 3)
    noise = float(np.percentile(tiles(resid).std(axis=(1, 2)), 20)) * 1.25
    return {"sharpness": sharp, "noise": noise, "edges": float(grad.mean())}


def exposure(grey, bgr) -> dict:
    import cv2

    hsv = cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV)
    s, v = hsv[..., 1], hsv[..., 2]
    return {
        "clipped_high": float((grey >= 250).mean()),
        "clipped_low": float((grey <= 5).mean()),
        "oversaturated": float(((s >= 220) & (v >= 180)).mean()),
    }


def saliency(bgr):
    """Spectral-residual saliency in [0, 1], smoothed so the subject is one blob."""
    import cv2
    import numpy as np

    ok, sal = cv2.saliency.StaticSaliencySpectralResidual_create().computeSaliency(bgr)
    if not ok:
        return None
    sal = cv2.GaussianBlur(sal.astype(np.float32), (0, 0), 3)
    span = float(sal.max() - sal.min())
    return (sal - sal.min()) / span if span > 1e-9 else None


def subject(bgr) -> dict:
    import numpy as np

    sal = saliency(bgr)
    if sal is None:
        return {"cx": 0.5, "cy": 0.5, "area": 0.0, "frame_cut": 0.0}
    mask = sal >= max(float(sal.mean() + sal.std()), 0.3)
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    weights = sal[ys, xs]
    return {
        "cx": float((xs * weights).sum() / weights.sum() / w),
        "cy": float((ys * weights).sum() / weights.sum() / h),
        "area": float(mask.mean()),
        "frame_cut": frame_cut(mask),
    }


def frame_cut(mask) -> float:
    """The largest share of one side of the frame that the subject's mask runs along."""
    return float(max(mask[0].mean(), mask[-1].mean(), mask[:, 0].mean(), mask[:, -1].mean()))


# -- judging -----------------------------------------------------------------------------------


def flags_of(m: dict) -> list[str]:
    checks = [
        ("blurry", m["sharpness"] < LIMITS["blurry"]),
        ("noisy", m["noise"] > LIMITS["noisy"]),
        ("overexposed", m["clipped_high"] > LIMITS["overexposed"]),
        ("underexposed", m["clipped_low"] > LIMITS["underexposed"]),
        ("oversaturated", m["oversaturated"] > LIMITS["oversaturated"]),
        ("subject_cut", m["frame_cut"] > LIMITS["subject_cut"]),
    ]
    return [name for name, bad in checks if bad]


def is_blank(m: dict) -> bool:
    return m["contrast"] < LIMITS["blank_contrast"]


def technical(m: dict) -> float:
    """1 for a clean image; each defect takes its share, scaled by how far past its limit."""
    blur = _ramp(LIMITS["blurry"] * 1.3 - m["sharpness"], LIMITS["blurry"])
    noise = _ramp(m["noise"] - LIMITS["noisy"] * 0.5, LIMITS["noisy"] * 2)
    clip = _ramp(m["clipped_high"], LIMITS["overexposed"] * 2) + _ramp(m["clipped_low"] - 0.1, 0.5)
    sat = _ramp(m["oversaturated"] - 0.02, LIMITS["oversaturated"] * 2)
    flat = _ramp(25 - m["contrast"], 25)
    return max(0.0, 1 - 0.35 * blur - 0.3 * noise - 0.25 * min(clip, 1) - 0.2 * sat - 0.15 * flat)


def placement(cx: float, cy: float) -> float:
    def near(px, py):
        return math.exp(-((cx - px) ** 2 + (cy - py) ** 2) / (2 * 0.09**2))

    return max(0.25, max(near(px, py) for px, py in THIRDS), 0.75 * near(0.5, 0.5))


def subject_size(area: float) -> float:
    if area < 0.03:
        return area / 0.03
    return 1.0 if area <= 0.35 else max(0.3, 1 - (area - 0.35))


def composition(m: dict) -> float:
    cut = _ramp(m["frame_cut"], LIMITS["subject_cut"] * 2.5)
    return 0.5 * placement(m["cx"], m["cy"]) + 0.2 * subject_size(m["area"]) + 0.3 * (1 - cut)


def judge(m: dict) -> Result:
    sub = {k: round(v, 4) for k, v in m.items() if k not in ("cx", "cy", "edges")}
    if is_blank(m):
        return Result(math.nan, sub, ["blank"])
    tech, comp = technical(m), composition(m)
    sub.update(
        technical=round(tech, 4),
        composition=round(comp, 4),
        placement=round(placement(m["cx"], m["cy"]), 4),
        subject_size=round(subject_size(m["area"]), 4),
    )
    return Result(0.6 * tech + 0.4 * comp, sub, flags_of(m))


def _ramp(x: float, span: float) -> float:
    """0 below 0, 1 above ``span``, linear between."""
    return min(1.0, max(0.0, x / span))
