"""From seed to work in stages: colour correction, upscaler models, Deep Shrink, finishing.

Four tools that variations.py, drafts.py and the studio call; none runs unless the config asks.

- **Colour correction** (A1111's img2img option): every ladder stage drifts the colours a little
  and a ladder adds the drifts up. The result's LAB histograms are matched to the draft's, then
  the corrected colours are blended under the result's own luminosity, so the palette comes back
  and the detail the stage drew stays. numpy only (the histogram matching is written here, as
  scikit-image's ``match_histograms`` does it: quantile to quantile per channel).
- **Upscaler models** from local files (``.pth``/``.safetensors``: ESRGAN, RealESRGAN, SwinIR...)
  through ``spandrel``, which tells the architecture from the state dict (``aiimg[finish]``).
  Run in tiles, so a 2 MP image does not need the GPU memory of one 8 MP activation.
- **Deep Shrink** (Kohya): a draft above the model's native area is drawn with the UNet's
  features halved after its first down block for the first part of the schedule (timesteps
  1000..650 by default, Kohya's ``ds_timesteps_1``), then at full size: the composition is laid
  out at the size the model was trained at, so SD 1.x at 800x800 doubles fewer subjects.
  Forward hooks on the UNet, registered for one call and removed after it.
- **Finishing** a variation into a copy (``[finish]``): an optional upscaler, a resize to a
  target area or width, then a restrained unsharp mask at the final size. The raw variation is
  kept; the copy carries the recipe with every step named.

torch and spandrel are imported inside functions only.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from pipeline.errors import AiimgError

# Pillow's UnsharpMask: radius and threshold fixed at the restrained values; only the amount is a setting
UNSHARP_RADIUS = 2
UNSHARP_THRESHOLD = 3
# upscaler tiles (input pixels) and the margin each sees around it, cropped off after: seams stay invisible
TILE = 512
TILE_MARGIN = 16
# Deep Shrink: halve the features after the UNet's first down block (the first downsample, Kohya's depth 3)
SHRINK_BLOCK = 0
SHRINK_FACTOR = 2
# Deep Shrink fires only this far above the model's native area: at it, there is nothing to fix
SHRINK_ABOVE = 1.2


# -- colour correction -----------------------------------------------------------------------------

_RGB_TO_XYZ = np.array(
    [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]]
)
_XYZ_TO_RGB = np.linalg.inv(_RGB_TO_XYZ)
_WHITE = np.array([0.95047, 1.0, 1.08883])  # D65
_EPSILON, _KAPPA = 216 / 24389, 24389 / 27
_CODES = np.arange(256) / 255
_LINEAR = np.where(_CODES <= 0.04045, _CODES / 12.92, ((_CODES + 0.055) / 1.055) ** 2.4).astype(np.float32)
# sRGB encoding by table: linear light in 1/65535 steps (finer than an 8-bit code anywhere on the curve)
_LEVELS = np.linspace(0, 1, 65536)
_ENCODE = np.where(_LEVELS <= 0.0031308, 12.92 * _LEVELS, 1.055 * _LEVELS ** (1 / 2.4) - 0.055).astype(np.float32)
# histograms are taken on LAB quantised to a tenth of a unit: far below a visible difference (a CIE76
# delta E of 2.3 is just noticeable), and it makes matching two counts and a table lookup per channel
_QUANTUM, _OFFSET = 0.1, 130.0
_BINS = int(2 * _OFFSET / _QUANTUM) + 1


def to_lab(image: Image.Image | np.ndarray) -> np.ndarray:
    """CIELAB (D65) of an 8-bit sRGB image, float32 HxWx3: L 0..100, a and b within about -110..100."""
    codes = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image, dtype=np.uint8)
    xyz = _LINEAR[codes] @ (_RGB_TO_XYZ / _WHITE[:, None]).T.astype(np.float32)
    f = np.where(xyz > _EPSILON, np.cbrt(xyz), (_KAPPA * xyz + 16) / 116)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)


def from_lab(lab: np.ndarray) -> np.ndarray:
    """sRGB floats 0..1 of a LAB array (out-of-gamut colours clipped)."""
    fy = (lab[..., 0] + 16) / 116
    f = np.stack([fy + lab[..., 1] / 500, fy, fy - lab[..., 2] / 200], axis=-1)
    cubed = f**3
    xyz = np.where(cubed > _EPSILON, cubed, (116 * f - 16) / _KAPPA) * _WHITE.astype(np.float32)
    linear = np.clip(xyz @ _XYZ_TO_RGB.T.astype(np.float32), 0, 1)
    return _ENCODE[np.rint(linear * 65535).astype(np.intp)]


def delta_e(a: Image.Image, b: Image.Image) -> float:
    """Mean CIE76 colour difference of two images of one size (about 2.3: just noticeable)."""
    return float(np.sqrt(((to_lab(a) - to_lab(b)) ** 2).sum(axis=-1)).mean())


@dataclass(frozen=True)
class ColourTarget:
    """The draft's LAB histograms as quantiles, computed once for every stage of every variation."""

    values: tuple  # per channel: the LAB values present (quantised)
    quantiles: tuple  # per channel: the share of pixels at or below each of them


def _bins(channel: np.ndarray) -> np.ndarray:
    return np.clip(np.rint((channel + _OFFSET) / _QUANTUM), 0, _BINS - 1).astype(np.intp)


def _cumulative(bins: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the bins present, the share of pixels at or below each)."""
    counts = np.bincount(bins.ravel(), minlength=_BINS)
    present = np.flatnonzero(counts)
    return present, np.cumsum(counts[present]) / bins.size


def colour_target(source: Image.Image) -> ColourTarget:
    lab = to_lab(source)
    found = [_cumulative(_bins(lab[..., c])) for c in range(3)]
    return ColourTarget(
        tuple(present * _QUANTUM - _OFFSET for present, _ in found), tuple(quantiles for _, quantiles in found)
    )


def colour_correct(image: Image.Image, target: ColourTarget) -> Image.Image:
    """A1111's colour correction: LAB histograms matched to ``target``, under ``image``'s luminosity."""
    lab = to_lab(image)
    matched = np.empty_like(lab)
    for c in range(3):
        bins = _bins(lab[..., c])
        present, quantiles = _cumulative(bins)
        # each value goes to the target's value at the same quantile (scikit-image's match_histograms)
        table = np.zeros(_BINS, dtype=np.float32)
        table[present] = np.interp(quantiles, target.quantiles[c], target.values[c])
        matched[..., c] = table[bins]
    corrected = from_lab(matched)
    original = np.asarray(image.convert("RGB"), dtype=np.float32) / 255
    blended = _set_lum(corrected, _lum(original))
    return Image.fromarray(np.clip(np.round(blended * 255), 0, 255).astype(np.uint8))


def _lum(rgb: np.ndarray) -> np.ndarray:
    return rgb @ np.array([0.3, 0.59, 0.11], dtype=np.float32)


def _set_lum(rgb: np.ndarray, lum: np.ndarray) -> np.ndarray:
    """The W3C "luminosity" blend (what A1111's blendmodes call does): ``rgb``'s hue and
    saturation at luminosity ``lum``, pulled back into gamut toward grey, not clipped per channel."""
    out = rgb + (lum - _lum(rgb))[..., None]
    low, high = out.min(axis=-1), out.max(axis=-1)
    for outside in (low < 0, high > 1):  # only the few pixels pushed out of gamut need the pull
        part = out[outside]
        grey, lo, hi = _lum(part)[:, None], low[outside][:, None], high[outside][:, None]
        scale = np.where(lo < 0, grey / np.maximum(grey - lo, 1e-6), 1)
        part = grey + (part - grey) * scale
        scale = np.where(hi > 1, (1 - grey) / np.maximum(hi - grey, 1e-6), 1)
        out[outside] = grey + (part - grey) * scale
    return np.clip(out, 0, 1)


# -- upscaler models (spandrel) ------------------------------------------------------------------


@dataclass
class Upscaler:
    """A local upscaler model file, loaded once per process (see :func:`upscaler`)."""

    path: Path
    name: str
    hash: str
    scale: int
    architecture: str
    model: object = field(repr=False, default=None)  # spandrel's ImageModelDescriptor

    def entry(self) -> dict:
        """What a recipe records of it (its file name, not the creator's folders)."""
        return {"name": self.name, "hash": self.hash, "scale": self.scale, "architecture": self.architecture}

    def upscale(self, image: Image.Image, device: str = "cpu") -> Image.Image:
        """``image`` times the model's scale, in tiles."""
        import torch

        model = self.model
        half = device == "cuda" and model.supports_half  # fp16 halves the GPU memory, as the UNet's does
        model.to(device)
        model.half() if half else model.float()
        pixels = torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)[None]
        pixels = pixels.to(device=device, dtype=torch.float16 if half else torch.float32) / 255
        with torch.inference_mode():
            out = _tiled(model, pixels, self.scale)
        array = (out[0].permute(1, 2, 0).float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
        return Image.fromarray(array)


def _tiled(run, pixels, scale: int):
    """``run`` (an SR model) over ``pixels`` in TILE-sized pieces, each seen with a margin of
    context that is cropped off again: the output equals one big call up to the model's receptive
    field, in a bounded amount of memory."""
    _, _, height, width = pixels.shape
    out = pixels.new_zeros((1, 3, height * scale, width * scale))
    for top in range(0, height, TILE):
        for left in range(0, width, TILE):
            bottom, right = min(top + TILE, height), min(left + TILE, width)
            t, lft = max(top - TILE_MARGIN, 0), max(left - TILE_MARGIN, 0)
            b, r = min(bottom + TILE_MARGIN, height), min(right + TILE_MARGIN, width)
            piece = run(pixels[:, :, t:b, lft:r])
            out[:, :, top * scale : bottom * scale, left * scale : right * scale] = piece[
                :, :3, (top - t) * scale : (bottom - t) * scale, (left - lft) * scale : (right - lft) * scale
            ]
    return out


_LOADED: dict[tuple, Upscaler] = {}


def upscaler(path: str | Path, key: str) -> Upscaler:
    """The upscaler model at ``path`` (cached per file version); ``key`` names the setting in errors.

    AiimgError naming the setting and the file: missing, not an architecture spandrel knows, not
    an upscaler (a 1x restoration or inpainting model), or spandrel not installed."""
    from pipeline import resources

    path = Path(path)
    said = f"{key} = {str(path)!r}"
    try:
        stat = path.stat()
    except OSError:
        raise AiimgError(
            f"{said}: no such file; put the model there or fix the path (relative to aiimg.toml)"
        ) from None
    cache_key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    if cache_key in _LOADED:
        return _LOADED[cache_key]
    spandrel = _spandrel(said)
    try:
        found = spandrel.ModelLoader().load_from_file(path)
    except spandrel.UnsupportedModelError:
        raise AiimgError(
            f"{said}: not a model architecture spandrel {spandrel.__version__} knows (ESRGAN, RealESRGAN, SwinIR, "
            f"HAT, DAT, ...); use another file"
        ) from None
    except Exception as exc:  # a truncated download, a pickle of something else, an unknown extension
        raise AiimgError(f"{said}: cannot read it as a model ({type(exc).__name__}: {_first_line(exc)})") from None
    if not isinstance(found, spandrel.ImageModelDescriptor) or found.scale < 2:
        purpose = getattr(found, "purpose", "?")
        raise AiimgError(
            f"{said}: a {found.architecture.name} {purpose} model at scale {getattr(found, 'scale', 1)}, "
            f"not an upscaler; use a 2x or 4x super-resolution model"
        )
    found.eval()
    loaded = Upscaler(path, path.name, resources.model_hash(path), found.scale, found.architecture.name, found)
    _LOADED[cache_key] = loaded
    return loaded


def _spandrel(said: str):
    try:
        import spandrel
    except (ImportError, RuntimeError) as exc:  # RuntimeError: a torchvision built for another torch
        raise AiimgError(
            f"{said}: upscaler models need spandrel and a torchvision built for this torch ({_first_line(exc)}); "
            f"pip install 'aiimg[finish]' (on a CPU-only torch, torchvision from the same index as torch)"
        ) from None
    return spandrel


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def local_file(cfg, value: str) -> Path:
    """A model path from aiimg.toml: relative to its folder, as every path in it is."""
    return Path(cfg.root) / Path(value).expanduser()


# -- Deep Shrink (drafts) ------------------------------------------------------------------------


def native_area(pipe) -> int:
    """The area the UNet was trained at: (sample_size * VAE factor)^2, 512x512 for SD 1.x."""
    size = pipe.unet.config.sample_size
    height, width = (size, size) if isinstance(size, int) else size
    factor = getattr(pipe, "vae_scale_factor", 8)
    return height * factor * width * factor


def deep_shrink_applies(pipe, width: int, height: int) -> bool:
    return width * height > native_area(pipe) * SHRINK_ABOVE


@dataclass
class Shrink:
    """What one Deep Shrink window did: the timestep of every UNet call and whether it shrank."""

    end: float
    threshold: float
    calls: list = field(default_factory=list)  # (timestep, shrunk)

    def entry(self) -> dict:
        """The draft recipe's record of it."""
        return {"block": SHRINK_BLOCK, "factor": SHRINK_FACTOR, "end": self.end, "until_timestep": self.threshold}


@contextlib.contextmanager
def deep_shrink(pipe, width: int, height: int, end: float | None):
    """Deep Shrink on ``pipe``'s UNet for the calls inside the ``with`` (Kohya's ``ds_depth_1 = 3``,
    ``ds_ratio = 0.5``): yields a :class:`Shrink`, or None when ``end`` is None or the size is not
    above the native area (nothing is hooked then: today's pixels)."""
    if end is None or not deep_shrink_applies(pipe, width, height):
        yield None
        return
    import torch.nn.functional as F

    unet = pipe.unet
    trained = pipe.scheduler.config.get("num_train_timesteps", 1000)
    shrink = Shrink(end, round((1 - end) * trained, 3))
    state = {"active": False}

    def on_call(module, args, kwargs):
        timestep = kwargs.get("timestep", args[1] if len(args) > 1 else None)
        t = float(timestep.flatten()[0]) if hasattr(timestep, "flatten") else float(timestep)
        # the schedule's first part, by timestep as Kohya and ComfyUI count it, not by step number:
        # the same noise levels whatever the sampler's spacing
        state["active"] = t >= shrink.threshold
        shrink.calls.append((t, state["active"]))

    def after_block(module, args, output):
        if not state["active"]:
            return None
        hidden, skips = output
        small = F.interpolate(hidden, size=_halved(hidden), mode="bicubic", align_corners=False)
        # the block's last skip is its downsampled output: the up path meets it at the shrunk size
        return small, (*skips[:-1], small)

    def before_up(module, args, kwargs):
        # an up block concatenates its input with the skips of the matching down block: after a
        # shrink (or an odd size halved and doubled) the input is brought to the skip's size
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        skips = kwargs.get("res_hidden_states_tuple", args[2] if len(args) > 2 else None)
        if hidden is None or not skips or hidden.shape[-2:] == skips[-1].shape[-2:]:
            return None
        hidden = F.interpolate(hidden, size=tuple(skips[-1].shape[-2:]), mode="bicubic", align_corners=False)
        if "hidden_states" in kwargs:
            return args, {**kwargs, "hidden_states": hidden}
        return (hidden, *args[1:]), kwargs

    handles = [
        unet.register_forward_pre_hook(on_call, with_kwargs=True),
        unet.down_blocks[SHRINK_BLOCK].register_forward_hook(after_block),
        *(block.register_forward_pre_hook(before_up, with_kwargs=True) for block in unet.up_blocks),
    ]
    try:
        yield shrink
    finally:
        for handle in handles:
            handle.remove()


def _halved(tensor) -> tuple[int, int]:
    return tuple(max(1, round(s / SHRINK_FACTOR)) for s in tensor.shape[-2:])


def deep_shrink_end(cfg) -> float | None:
    """``[draft] deep_shrink_end`` when ``[draft] deep_shrink`` is on, else None (what drafts.make takes)."""
    return cfg.draft.deep_shrink_end if cfg.draft.deep_shrink else None


# -- finishing (works) ---------------------------------------------------------------------------


def target_size(size: tuple[int, int], area: int, width: int) -> tuple[int, int]:
    """``size`` resized to ``width`` or to ``area`` at its own ratio (exact, not snapped to 64:
    this copy is for people, not for a UNet); ``size`` itself when both are 0."""
    w, h = size
    if width:
        return width, max(1, round(width * h / w))
    if area:
        return max(1, round(math.sqrt(area * w / h))), max(1, round(math.sqrt(area * h / w)))
    return size


def finish_image(image: Image.Image, settings, upscaler_model: Upscaler | None = None, device: str = "cpu"):
    """(the finished image, the steps taken): upscaler, resize, unsharp mask, in that order.

    Sharpening comes last so that it acts at the size people see: an unsharp mask before a
    resize is blurred away by a downscale or grown into halos by an upscale."""
    steps = []
    if upscaler_model is not None:
        image = upscaler_model.upscale(image, device)
        steps.append({"step": "upscale", **upscaler_model.entry(), "width": image.width, "height": image.height})
    size = target_size(image.size, settings.area, settings.width)
    if size != image.size:
        image = image.resize(size, Image.LANCZOS)
        steps.append({"step": "resize", "filter": "Lanczos", "width": image.width, "height": image.height})
    if settings.sharpen:
        image = image.filter(
            ImageFilter.UnsharpMask(radius=UNSHARP_RADIUS, percent=settings.sharpen, threshold=UNSHARP_THRESHOLD)
        )
        steps.append(
            {"step": "unsharp", "radius": UNSHARP_RADIUS, "percent": settings.sharpen, "threshold": UNSHARP_THRESHOLD}
        )
    return image, steps


def finishing_upscaler(cfg) -> Upscaler | None:
    """``[finish] upscaler`` loaded (checked before a round starts: a bad file fails before any pixel)."""
    if not (cfg.finish.enabled and cfg.finish.upscaler):
        return None
    return upscaler(local_file(cfg, cfg.finish.upscaler), "[finish] upscaler")


def finish(cfg, content, image: Image.Image, recipe, device: str = "cpu") -> Image.Image | None:
    """``[finish]`` on a variation just saved: its finished copy written beside it (the raw stays as
    made) and every step recorded in ``recipe.finished``; the copy carries the recipe as A1111
    parameters with a ``Finishing`` field. None (and nothing written) when ``[finish]`` is off."""
    finished = finished_copy(cfg, image, recipe, device)
    if finished is not None:
        save_finished(content, recipe, finished)
    return finished


def finished_copy(cfg, image: Image.Image, recipe, device: str = "cpu") -> Image.Image | None:
    """The finished copy (None when ``[finish]`` is off), its steps and seconds in ``recipe.finished``:
    the half of :func:`finish` that needs the device (a worker runs it; workers/)."""
    if not cfg.finish.enabled:
        return None
    started = time.perf_counter()
    finished, steps = finish_image(image, cfg.finish, finishing_upscaler(cfg), device)
    recipe.finished = {"width": finished.width, "height": finished.height, "steps": steps}
    recipe.finished["seconds"] = round(time.perf_counter() - started, 3)
    return finished


def save_finished(content, recipe, finished: Image.Image) -> None:
    """The half of :func:`finish` that writes (the owner of content/ runs it): the copy, named in the recipe."""
    from pipeline.metadata import png_bytes

    path = content.finished_path(recipe.parent, recipe.file)
    recipe.finished = {"file": path.relative_to(content.work_folder(recipe.parent)).as_posix(), **recipe.finished}
    content.write_finished(recipe.parent, recipe.file, png_bytes(finished, recipe.to_json()))
