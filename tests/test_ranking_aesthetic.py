"""The LAION aesthetic loader on a tiny random stand-in saved in the real file layout."""

from __future__ import annotations

import math

import pytest
import ranking_fixtures as F
import torch  # noqa: E402  (the studio extra; part of the dev install)

from pipeline import config, steering
from pipeline.content import Content
from pipeline.errors import AiimgError
from pipeline.ranking.aesthetic import AestheticScorer, make_head
from pipeline.ranking.ranker import Ranker
from pipeline.ranking.scorers import Item

torch.set_num_threads(1)
EMBED = 16


def save_stand_in(root, full_clip: bool = True):
    """A tiny CLIP (random weights, save_pretrained) + a random head .pth with LAION's keys."""
    from transformers import CLIPConfig, CLIPModel, CLIPVisionConfig, CLIPVisionModelWithProjection

    vision = dict(
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
        projection_dim=EMBED,
    )
    torch.manual_seed(0)
    if full_clip:
        text = dict(
            vocab_size=99,
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=77,
            projection_dim=EMBED,
        )
        model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=EMBED))
    else:
        model = CLIPVisionModelWithProjection(CLIPVisionConfig(**vision))
    model.save_pretrained(root / "clip")
    head = make_head(EMBED)
    torch.save(head.state_dict(), root / "head.pth")
    return root / "clip", root / "head.pth"


def items(tmp_path):
    from PIL import Image

    out = []
    for n, img in enumerate([F.clean(1), F.noisy(F.clean(2)), F.blank(3)]):
        path = tmp_path / f"{n}.png"
        Image.fromarray(img).save(path)
        out.append(Item(f"x{n}", path))
    return out + [Item("missing", tmp_path / "nope.png")]


@pytest.mark.parametrize("full_clip", [True, False])
def test_stand_in_scores_images(tmp_path, full_clip):
    clip, head = save_stand_in(tmp_path, full_clip)
    assert sorted(torch.load(head, weights_only=True)) == sorted(
        f"layers.{i}.{p}" for i in (0, 2, 4, 6, 7) for p in ("weight", "bias")
    )
    scorer = AestheticScorer("clip", "head.pth", root=str(tmp_path))
    results = scorer.score(items(tmp_path))
    values = [r.score for r in results[:3]]
    assert all(math.isfinite(v) for v in values)
    assert len(set(values)) == 3  # different images, different ratings
    assert math.isnan(results[3].score) and results[3].flags == ["unreadable"]


def test_missing_files_fail_fast_naming_the_file(tmp_path):
    clip, head = save_stand_in(tmp_path)
    with pytest.raises(AiimgError, match="elsewhere/clip/config.json: missing"):
        AestheticScorer("clip", "head.pth", root=str(tmp_path / "elsewhere"))
    with pytest.raises(AiimgError, match="other.pth: missing"):
        AestheticScorer("clip", "other.pth", root=str(tmp_path))
    (clip / "model.safetensors").unlink()
    with pytest.raises(AiimgError, match=r"clip/model.safetensors: missing"):
        AestheticScorer("clip", "head.pth", root=str(tmp_path))
    with pytest.raises(AiimgError, match="clip_model: not set"):
        AestheticScorer("", "head.pth", root=str(tmp_path))


def test_head_of_wrong_size_is_a_clear_error(tmp_path):
    clip, head = save_stand_in(tmp_path)
    torch.save(make_head(EMBED * 2).state_dict(), head)
    scorer = AestheticScorer("clip", "head.pth", root=str(tmp_path))
    with pytest.raises(AiimgError, match="head.pth: not an aesthetic head for 16-d"):
        scorer.model()


def test_ranking_goes_on_without_a_missing_scorer(tmp_path):
    cfg = config.from_dict({"score": {"clip_model": "clip", "aesthetic_head": "head.pth"}}, root=str(tmp_path))
    content = Content(cfg.content_dir).ensure()
    ranker = Ranker(cfg, content)
    assert ranker.names == ["default"]
    assert "clip/config.json: missing" in ranker.problems[0]
    draft_id = F.make_draft(content, F.clean(4))
    ranker.on_new_draft(draft_id)
    assert set(F.scores_of(content, draft_id)["scorers"]) == {"default"}


def test_configured_scorer_is_recorded_beside_the_default(tmp_path):
    save_stand_in(tmp_path)
    cfg = config.from_dict({"score": {"clip_model": "clip", "aesthetic_head": "head.pth"}}, root=str(tmp_path))
    content = Content(cfg.content_dir).ensure()
    ranker = Ranker(cfg, content)
    ids = [F.make_draft(content, F.clean(s)) for s in (5, 6)]
    for draft_id in ids:
        ranker.on_new_draft(draft_id)
    scores = F.scores_of(content, ids[1])
    assert set(scores["scorers"]) == {"default", "aesthetic"}
    assert math.isfinite(scores["scorers"]["aesthetic"]["score"]) and math.isfinite(scores["score"])


def test_learning_with_a_local_clip_uses_its_embeddings(tmp_path):
    import datetime as dt
    import json

    import numpy as np

    from pipeline.ranking import rank_command
    from pipeline.ranking.store import load_embedding

    save_stand_in(tmp_path)
    cfg = config.from_dict(
        {"score": {"clip_model": "clip", "aesthetic_head": "head.pth", "learn_min_seeds": 4, "learn_min_unmarked": 8}},
        root=str(tmp_path),
    )
    content = Content(cfg.content_dir).ensure()
    old = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
    size = (128, 128)
    shown = []
    for n in range(12):
        img = F.clean(n, size=size) if n < 4 else F.noisy(F.clean(n, size=size))
        draft_id = F.make_draft(content, img, when=old + dt.timedelta(minutes=n))
        if n < 4:
            content.write_marker(draft_id, "")
        else:
            shown.append(draft_id)
    steering.record_impressions(content, shown)  # seen on the review page and passed over
    report = rank_command(cfg, learn=True)
    assert "learned from 4 seeds and 8 drafts seen and not seeded" in report
    first = content.drafts()[0].id
    emb = load_embedding(content, first)
    assert emb.shape == (EMBED,) and abs(float(np.linalg.norm(emb)) - 1) < 1e-4
    model = json.loads(content.preference_path().read_text())
    assert model["features"][-2:] == ["aesthetic", "clip_prototype"] and len(model["prototype"]) == EMBED
    new = F.make_draft(content, F.clean(40, size=size))
    rank_command(cfg)
    assert set(F.scores_of(content, new)["scorers"]) == {"default", "aesthetic", "preference"}
