"""The optional learned scorer: the LAION aesthetic predictor, from local files only.

Files (``[score]`` in aiimg.toml, paths relative to it):

- ``clip_model``: a local folder of CLIP ViT-L/14 as saved by ``save_pretrained`` (e.g. a copy of
  ``openai/clip-vit-large-patch14``): ``config.json`` + ``model.safetensors`` (or
  ``pytorch_model.bin``). A full CLIPModel folder or a CLIPVisionModelWithProjection one.
- ``aesthetic_head``: the MLP head ``sac+logos+ava1-l14-linearMSE.pth``: a torch state_dict
  with keys ``layers.{0,2,4,6,7}.{weight,bias}`` (Linear d->1024, 1024->128, 128->64, 64->16,
  16->1, dropouts between), whose input is the L2-normalised image embedding (d = 768).

Nothing is ever downloaded: the folder is opened with ``local_files_only`` and preprocessing
(resize the short side to the model's image size, bicubic, centre crop, CLIP mean/std) is done
here, so no image-processor file or torchvision is needed. The constructor only checks that
the files exist (a missing one is an AiimgError naming it) and that torch and transformers
(the ``studio`` extra) are installed, so a machine without them has the scorer off from the
start, named in ``ranker.problems``, instead of failing on every draft; weights load on first use.
Raw score: the predictor's rating, about 1..10. The scorer name is ``aesthetic``. The
L2-normalised image embedding goes along (``Result.extra["embedding"]``); the ranker keeps it
for the preference model (store.py: ``content/.aiimg/embeddings/<id>.npy``).
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path

from pipeline.errors import AiimgError
from pipeline.ranking.scorers import Item, Result

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def check_files(clip_model: str, head: str, root: str = ".") -> tuple[Path, Path]:
    """The two local paths, or an AiimgError naming the first file that is missing."""
    if not clip_model or not head:
        missing = "clip_model" if not clip_model else "aesthetic_head"
        raise AiimgError(f"[score] {missing}: not set; the aesthetic scorer needs both clip_model and aesthetic_head")
    folder, head_path = Path(root) / clip_model, Path(root) / head
    if not (folder / "config.json").is_file():
        raise AiimgError(
            f"{folder / 'config.json'}: missing; [score] clip_model must be a local CLIP folder "
            f"saved with save_pretrained (nothing is downloaded)"
        )
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        raise AiimgError(f"{folder / WEIGHT_FILES[0]}: missing (or {WEIGHT_FILES[1]}); copy the CLIP weights there")
    if not head_path.is_file():
        raise AiimgError(f"{head_path}: missing; [score] aesthetic_head must be the LAION MLP head .pth file")
    return folder, head_path


def check_installed() -> None:
    """An AiimgError when torch or transformers cannot be imported (found without importing them)."""
    for module in ("torch", "transformers"):
        try:
            found = importlib.util.find_spec(module) is not None
        except ValueError:  # sys.modules holds None for it: imports of it are blocked
            found = False
        if not found:
            raise AiimgError(
                f"[score] clip_model: the aesthetic scorer needs {module}, which is not installed here; "
                f'install the studio extra (pip install -e ".[studio]") or leave clip_model and aesthetic_head empty'
            )


class AestheticScorer:
    name = "aesthetic"

    def __init__(self, clip_model: str, head: str, root: str = "."):
        self.folder, self.head_path = check_files(clip_model, head, root)
        check_installed()
        self._model = None
        self._lock = threading.Lock()

    def score(self, items: list[Item]) -> list[Result]:
        clip, head, size = self.model()
        import torch

        keep = [i for i, it in enumerate(items) if it.pixels() is not None]
        out = [Result(float("nan"), {}, ["unreadable"]) for _ in items]
        if keep:
            batch = torch.stack([preprocess(items[i].pixels(), size) for i in keep])
            with torch.inference_mode():
                emb = clip(pixel_values=batch).image_embeds
                emb = emb / emb.norm(dim=-1, keepdim=True)
                rating = head(emb).squeeze(-1)
            for i, value, e in zip(keep, rating.tolist(), emb.numpy()):
                out[i] = Result(float(value), {}, [], {"embedding": e})
        return out

    def model(self):
        """(CLIP vision tower with projection, MLP head, input size), loaded once."""
        with self._lock:
            if self._model is None:
                self._model = load(self.folder, self.head_path)
            return self._model


def load(folder: Path, head_path: Path):
    import torch
    from transformers import CLIPVisionModelWithProjection

    try:
        clip = CLIPVisionModelWithProjection.from_pretrained(str(folder), local_files_only=True).eval()
    except (OSError, ValueError) as exc:
        raise AiimgError(f"{folder}: not a loadable CLIP model ({exc})") from None
    dim = clip.config.projection_dim
    head = make_head(dim)
    try:
        head.load_state_dict(torch.load(head_path, map_location="cpu", weights_only=True))
    except (RuntimeError, OSError, KeyError, TypeError, ValueError) as exc:
        raise AiimgError(
            f"{head_path}: not an aesthetic head for {dim}-d CLIP embeddings "
            f"(keys layers.{{0,2,4,6,7}}): {str(exc)[:300]}"
        ) from None
    return clip, head.eval(), clip.config.image_size


def make_head(dim: int):
    """LAION's MLP under the attribute ``layers``, so the .pth state_dict loads as is."""
    import torch.nn as nn

    class AestheticHead(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.Sequential(
                nn.Linear(dim, 1024),
                nn.Dropout(0.2),
                nn.Linear(1024, 128),
                nn.Dropout(0.2),
                nn.Linear(128, 64),
                nn.Dropout(0.1),
                nn.Linear(64, 16),
                nn.Linear(16, 1),
            )

        def forward(self, x):
            return self.layers(x)

    return AestheticHead()


def preprocess(rgb, size: int):
    """CLIP preprocessing: short side to ``size`` (bicubic), centre crop, normalise; CHW float."""
    import numpy as np
    import torch
    from PIL import Image

    img = Image.fromarray(rgb)
    scale = size / min(img.size)
    img = img.resize((max(size, round(img.width * scale)), max(size, round(img.height * scale))), Image.BICUBIC)
    left, top = (img.width - size) // 2, (img.height - size) // 2
    arr = np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.float32) / 255.0
    arr = (arr - np.array(CLIP_MEAN, dtype=np.float32)) / np.array(CLIP_STD, dtype=np.float32)
    return torch.from_numpy(arr.transpose(2, 0, 1).copy())
