"""The studio in-process on the real tiny model: drafts, rounds of variations, bad input."""

import dataclasses
import errno
import json
import time

import numpy as np
import pytest
from PIL import Image

from pipeline import drafts, files, logs, markers, metadata, variations
from pipeline.content import Content
from pipeline.recipes import DraftRecipe
from pipeline.studio import Studio

RECIPE_KEYS = {
    "id",
    "created",
    "model",
    "scheduler",
    "template",
    "prompt",
    "negative_prompt",
    "picks",
    "prompt_seed",
    "seed",
    "width",
    "height",
    "steps",
    "guidance_scale",
    "seconds",
    "aiimg_version",
}


@pytest.fixture
def studio(cfg, tiny):
    content = Content(cfg.content_dir).ensure()
    s = Studio(cfg, content, model=tiny)  # one in-process worker with the session's tiny model
    s.start()
    yield s
    s.close()


def one_draft(studio) -> str:
    before = {d.id for d in studio.content.drafts()}
    studio.run(max_drafts=1, once=True, only=set())  # a draft, no seed served
    studio.drain()
    (new,) = [d.id for d in studio.content.drafts() if d.id not in before]
    return new


def mark(studio, draft_id, text=""):
    path = studio.content.draft_folder(draft_id) / "seed.txt"
    path.write_text(text)
    return path


def serve_all(studio, only=None) -> int:
    """Serve every seed that waits (or those of the drafts ``only`` names); the variations made."""
    before = studio.made["variations"]
    studio.run(once=True, drafting=False, only=only)
    return studio.made["variations"] - before


def test_draft_has_png_recipe_and_parameters_chunk(studio, cfg):
    draft_id = one_draft(studio)
    folder = studio.content.draft_folder(draft_id)
    recipe = studio.content.read_draft(draft_id)
    assert RECIPE_KEYS <= set(json.loads((folder / "draft.json").read_text())) and recipe.id == draft_id
    assert recipe.model == {"name": "tiny", "hash": studio.info.hash}
    with Image.open(folder / "draft.png") as img:
        assert img.size == (recipe.width, recipe.height)
        params = metadata.parse_parameters(img.text["parameters"])
    assert params["prompt"] == recipe.prompt and params["Seed"] == str(recipe.seed)
    assert params["Size"] == f"{recipe.width}x{recipe.height}" and params["Model"] == "tiny"
    assert recipe.width % 64 == 0 and abs(recipe.width * recipe.height - cfg.draft.area) <= 0.03 * cfg.draft.area


def test_draft_regenerates_from_its_recipe_alone(studio, tiny):
    draft_id = one_draft(studio)
    folder = studio.content.draft_folder(draft_id)
    recipe = DraftRecipe.from_json(json.loads((folder / "draft.json").read_text()), "draft.json")
    again = drafts.make(tiny, recipe)
    with Image.open(folder / "draft.png") as img:
        assert np.array_equal(np.asarray(img.convert("RGB")), np.asarray(again))


def test_seed_becomes_three_variations_at_the_variation_area_and_draft_aspect(studio, cfg):
    draft_id = one_draft(studio)
    mark(studio, draft_id)
    assert serve_all(studio) == 3
    draft = studio.content.read_draft(draft_id)
    work = studio.content.read_work(draft_id)
    assert [v.file for v in work.variations] == ["1.png", "2.png", "3.png"]
    # the work is self-contained: its draft travels with it
    original = studio.content.draft(draft_id)
    assert studio.content.work_draft_image(draft_id).read_bytes() == original.image.read_bytes()
    assert studio.content.work_draft_recipe(draft_id).read_bytes() == original.recipe_path.read_bytes()
    area = cfg.variation.areas[-1]
    seeds = set()
    for v in work.variations:
        assert RECIPE_KEYS | {"strength", "parent", "index", "file"} <= set(v.to_json())
        assert v.parent == draft_id and v.strength == 0.5 and v.prompt == draft.prompt
        with Image.open(studio.content.work_folder(draft_id) / v.file) as img:
            assert img.size == (v.width, v.height)
            params = metadata.parse_parameters(img.text["parameters"])
        assert params["Denoising strength"] == "0.5" and params["Seed"] == str(v.seed)
        assert abs(v.width * v.height - area) / area <= 0.03
        assert abs((v.width / v.height) / (draft.width / draft.height) - 1) <= 0.03
        seeds.add(v.seed)
    assert len(seeds) == 3  # one generator, one seed per image


def test_overrides_then_an_edit_adds_a_round_without_overwriting(studio):
    draft_id = one_draft(studio)
    marker = mark(studio, draft_id, 'count = 2\nstrength = 0.75\nprompt = "a red fox"\n')
    assert serve_all(studio) == 2
    first = (studio.content.work_folder(draft_id) / "1.png").read_bytes()
    assert serve_all(studio) == 0  # nothing waits: rerun skips
    time.sleep(0.01)
    marker.write_text("count = 1\n")
    assert serve_all(studio) == 1
    work = studio.content.read_work(draft_id)
    assert [v.file for v in work.variations] == ["1.png", "2.png", "3.png"]
    assert [v.round for v in work.variations] == [1, 1, 2]
    assert work.variations[0].prompt == "a red fox" and work.variations[0].strength == 0.75
    assert work.variations[2].strength == 0.5
    assert (studio.content.work_folder(draft_id) / "1.png").read_bytes() == first


def test_removing_the_marker_before_the_round_starts_cancels_it(studio, monkeypatch):
    first, second = one_draft(studio), one_draft(studio)
    mark(studio, first, "count = 2")
    time.sleep(0.01)
    later = mark(studio, second)  # waits behind the first seed's variations
    real = variations.make

    def make(*args, **kwargs):  # the creator changes their mind while the first seed is served
        later.unlink(missing_ok=True)
        return real(*args, **kwargs)

    monkeypatch.setattr(variations, "make", make)
    assert serve_all(studio) == 2
    assert not studio.content.work_folder(second).exists()  # nothing written: its round never started
    assert len(studio.content.read_work(first).variations) == 2


def test_removing_the_marker_mid_round_keeps_what_was_made_and_cancels_the_rest(studio, monkeypatch):
    draft_id = one_draft(studio)
    marker = mark(studio, draft_id, "count = 3")
    real = variations.make

    def make(*args, **kwargs):
        image = real(*args, **kwargs)
        marker.unlink(missing_ok=True)  # during the first variation
        return image

    monkeypatch.setattr(variations, "make", make)
    assert serve_all(studio) == 1
    work = studio.content.read_work(draft_id)
    assert [v.file for v in work.variations] == ["1.png"] and work.rounds[0].cancelled


@pytest.mark.parametrize(
    "body,message",
    [
        (b"count = nope", "not valid TOML"),
        (b"colour = 3", "unknown key 'colour'"),
        (b"\xff\xfe\xfa", "not UTF-8"),
        # valid TOML and in range, but not what this model or diffusers can do: answered, not retried
        (b'sampler = "DDIM"\nschedule = "Karras"', "has no such schedule"),
        (b'schedule = "Karras"', "has no such schedule"),  # the model's own sampler (PLMS) with it
        (b"clip_skip = 9", "text encoder has 2 layers"),
        (b'prompt = "a cat <lora:nowhere:1>"', "no LoRA folders are configured"),
    ],
)
def test_bad_marker_gets_an_error_file_and_other_seeds_are_still_served(studio, body, message):
    bad_id, good_id = one_draft(studio), one_draft(studio)
    (studio.content.draft_folder(bad_id) / "seed.txt").write_bytes(body)
    time.sleep(0.01)
    mark(studio, good_id, "count = 1")
    assert serve_all(studio) == 1
    assert message in (studio.content.draft_folder(bad_id) / "seed.error.txt").read_text()
    assert studio.content.read_work(good_id).variations


def test_corrupt_draft_png_is_reported_beside_the_marker(studio):
    draft_id = one_draft(studio)
    png = studio.content.draft_folder(draft_id) / "draft.png"
    png.write_bytes(png.read_bytes()[:200])
    mark(studio, draft_id)
    assert serve_all(studio) == 0
    error = (png.parent / "seed.error.txt").read_text()
    assert str(png) in error and "corrupt" in error


def test_marker_in_a_folder_that_is_not_a_draft(studio):
    folder = studio.content.drafts_dir / "2026-11-25" / "my-favourites"
    folder.mkdir(parents=True)
    (folder / "seed.txt").write_text("")
    assert serve_all(studio) == 0
    assert "not a draft folder" in (folder / "seed.error.txt").read_text()


def test_fixing_the_marker_clears_the_error(studio):
    draft_id = one_draft(studio)
    marker = mark(studio, draft_id, "count = -1")
    serve_all(studio)
    assert (marker.parent / "seed.error.txt").exists()
    time.sleep(0.01)
    marker.write_text("count = 1")
    assert serve_all(studio) == 1
    assert not (marker.parent / "seed.error.txt").exists()


def test_disk_full_loses_nothing_and_the_variation_is_made_again_after_a_pause(studio, monkeypatch, cfg):
    draft_id = one_draft(studio)
    mark(studio, draft_id, "count = 2")
    real, real_make, real_wait = files.os.replace, variations.make, studio._wait
    failed, made, waits = [], [], []

    def full_once(src, dst):
        if str(dst).endswith("2.png") and not failed:
            failed.append(time.monotonic())
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(src, dst)

    def make(model, source, recipe, **kwargs):
        made.append((recipe.index, time.monotonic()))
        return real_make(model, source, recipe, **kwargs)

    def wait():
        waits.append(time.monotonic())
        real_wait()

    monkeypatch.setattr(files.os, "replace", full_once)
    monkeypatch.setattr(variations, "make", make)
    monkeypatch.setattr(studio, "_wait", wait)
    assert serve_all(studio) == 2
    assert failed and studio.made["errors"] == 1
    assert [i for i, _ in made] == [1, 2, 2]  # made again once, not again and again while the disk is full
    assert made[2][1] - failed[0] >= cfg.run.rescan_seconds * 0.9  # after the pause
    assert len([w for w in waits if w >= failed[0]]) < 20  # the loop sleeps through the pause, it does not spin
    assert [v.file for v in studio.content.read_work(draft_id).variations] == ["1.png", "2.png"]
    assert not list(studio.content.work_folder(draft_id).glob(".*tmp"))


def test_a_resumed_round_makes_the_same_pixels_it_would_have(studio, tiny):
    draft_id = one_draft(studio)
    mark(studio, draft_id, "count = 2")
    serve_all(studio)
    work = studio.content.read_work(draft_id)
    v = work.variations[1]
    with Image.open(studio.content.draft(draft_id).image) as img:
        again = variations.make(tiny, img.convert("RGB"), dataclasses.replace(v))
    with Image.open(studio.content.work_folder(draft_id) / "2.png") as img:
        assert np.array_equal(np.asarray(img.convert("RGB")), np.asarray(again))


def test_a_seed_marked_during_a_draft_preempts_it_within_one_step(studio, tiny):
    target = one_draft(studio)
    calls = []

    def on_unet(module, args):  # as a denoising step starts
        calls.append(_job_kind(studio))
        if len(calls) == 1:  # the creator drops seed.txt during the draft's first step
            studio.on_change([mark(studio, target, "count = 1")])
            _wait_until(lambda: studio.workers[0].stopping)  # the owner has asked the draft to stop

    hook = tiny.txt2img.unet.register_forward_pre_hook(on_unet)
    try:
        studio.run(max_drafts=1, once=True)
    finally:
        hook.remove()
    studio.drain()
    assert studio.made["preempted"] == 1 and studio.made["variations"] == 1 and studio.made["drafts"] == 2
    assert calls[:2] == ["draft", "variation"]  # one step of the draft, then straight to the seed
    assert len(studio.content.drafts()) == 2  # the target and the draft made after; the stopped one left nothing
    assert not [p for p in studio.content.drafts_dir.rglob("*") if p.name.startswith(".")]


def _job_kind(studio) -> str:
    return studio.workers[0].job.kind  # set before the job is handed over


def _wait_until(predicate, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_disk_full_while_saving_a_draft_is_reported_and_leaves_nothing(studio, monkeypatch):
    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "replace", full)
    studio.run(max_drafts=1, once=True, only=set())  # the image was made; its write failed
    studio.drain()
    assert studio.made["drafts"] == 1 and studio.made["errors"] == 1 and studio.content.drafts() == []
    assert not [p for p in studio.content.root.rglob("*") if p.name.endswith(".tmp")]


def test_a_copy_of_a_marked_draft_folder_gets_an_error_not_endless_rounds(studio):
    import shutil

    draft_id = one_draft(studio)
    original = studio.content.draft_folder(draft_id)
    mark(studio, draft_id, "count = 1")
    copy = studio.content.drafts_dir / "favourites" / draft_id
    shutil.copytree(original, copy)  # a plain copy: new mtimes, a new marker signature
    assert serve_all(studio) == 1
    assert len(studio.content.read_work(draft_id).rounds) == 1
    assert "copies elsewhere are not served" in (copy / "seed.error.txt").read_text()


@pytest.mark.parametrize("breakage", ["draft_missing_key", "work_not_an_object"])
def test_broken_records_are_reported_beside_the_marker_not_crashing(studio, breakage):
    draft_id = one_draft(studio)
    if breakage == "draft_missing_key":
        path = studio.content.draft(draft_id).recipe_path
        recipe = json.loads(path.read_text())
        del recipe["width"]
        path.write_text(json.dumps(recipe))
    else:
        studio.content.work_folder(draft_id).mkdir(parents=True)
        (studio.content.work_folder(draft_id) / "work.json").write_text("{}")
    mark(studio, draft_id)
    assert serve_all(studio) == 0
    error = (studio.content.draft_folder(draft_id) / "seed.error.txt").read_text()
    expected = (
        "draft.json: not a DraftRecipe (missing width)" if breakage == "draft_missing_key" else "not a work record"
    )
    assert expected in error


def test_an_unexpected_failure_is_reported_and_the_loop_goes_on(studio, monkeypatch):
    bad, good = one_draft(studio), one_draft(studio)
    mark(studio, bad, "count = 1")
    time.sleep(0.01)
    mark(studio, good, "count = 1")
    real = variations.load_draft

    def explode(content, draft):
        if draft.id == bad:
            raise ValueError("something nobody foresaw")
        return real(content, draft)

    log = logs.log_to(studio.content.logs_dir)
    monkeypatch.setattr(variations, "load_draft", explode)
    assert serve_all(studio) == 1
    error = (studio.content.draft_folder(bad) / "seed.error.txt").read_text()
    assert "ValueError: something nobody foresaw" in error and str(log) in error
    text = log.read_text()  # the traceback is in the log the error file names
    assert "Traceback (most recent call last)" in text and "in explode" in text and "something nobody" in text


def test_when_even_the_error_file_cannot_be_written_the_loop_backs_off(studio, monkeypatch, cfg):
    draft_id = one_draft(studio)
    mark(studio, draft_id, "count = oops")
    real, tries = markers.write_error, []

    def read_only_once(marker, message):
        tries.append(time.monotonic())
        if len(tries) == 1:
            raise OSError(30, "Read-only file system")
        return real(marker, message)

    monkeypatch.setattr(markers, "write_error", read_only_once)
    serve_all(studio)
    assert len(tries) == 2 and tries[1] - tries[0] >= cfg.run.rescan_seconds * 0.9  # backed off, then answered
    assert "not valid TOML" in markers.error_path(studio.content.draft_folder(draft_id)).read_text()


def test_a_seed_named_twice_makes_one_round(studio):
    draft_id = one_draft(studio)
    mark(studio, draft_id, "count = 1")
    assert serve_all(studio, only=[draft_id, draft_id]) == 1
    assert serve_all(studio, only=[draft_id]) == 0  # e.g. `aiimg vary ID` again: done already
    assert len(studio.content.read_work(draft_id).rounds) == 1


def test_an_unreadable_marker_gets_an_error_file(studio, monkeypatch):
    draft_id = one_draft(studio)
    marker = mark(studio, draft_id)
    real_open = open

    def denied(path, *args, **kwargs):  # root reads anything: simulate chmod 000
        if str(path) == str(marker):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", denied)
    monkeypatch.setattr(type(marker), "read_bytes", lambda self: denied(self))
    assert serve_all(studio) == 0
    monkeypatch.undo()
    assert "cannot read" in (marker.parent / "seed.error.txt").read_text()
