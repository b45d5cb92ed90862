"""seed.txt and seed.error.txt (markers.py): names, overrides, versions, the error file."""

import os

import pytest
from conftest import bare_draft

from pipeline import markers, rounds
from pipeline.content import Content
from pipeline.errors import MarkerError

make_draft = bare_draft


@pytest.fixture
def c(tmp_path):
    return Content(tmp_path / "content").ensure()


@pytest.mark.parametrize("name", ["seed.txt", "SEED.TXT", "Seed.txt", "seed.txt.txt", "SEED.TXT.TXT"])
def test_marker_names_are_case_insensitive_and_accept_windows_double_extension(c, name):
    folder = make_draft(c, "20261125-120000-aaaa")
    (folder / name).write_text("")
    assert markers.find(folder).name == name


def test_other_names_are_not_markers(c):
    folder = make_draft(c, "20261125-120000-aaaa")
    for name in ("seed.txt.bak", "seeds.txt", "seed.error.txt"):
        (folder / name).write_text("")
    assert markers.find(folder) is None


def test_marker_overrides(tmp_path):
    path = tmp_path / "seed.txt"
    path.write_text('count = 5\nstrength = 0.6\nprompt = "a cat"\nguidance_scale = 6\n')
    assert markers.parse(path) == {"count": 5, "strength": 0.6, "prompt": "a cat", "guidance_scale": 6}
    path.write_bytes(b"")
    assert markers.parse(path) == {}
    path.write_bytes("\ufeffcount = 2\n".encode())  # Notepad's BOM
    assert markers.parse(path) == {"count": 2}


@pytest.mark.parametrize(
    "body,match",
    [
        (b"count = ", "not valid TOML"),
        (b"cnt = 3", "unknown key 'cnt'"),
        (b"count = 0", "out of range"),
        (b"count = true", "should be a int"),
        (b"strength = 2.0", "out of range"),
        (b"strength = 0.001", "out of range"),
        (b"prompt = 3", "should be a str"),
        (b"\xff\xfe\x00bad", "not UTF-8"),
    ],
)
def test_bad_markers_say_what_is_wrong_and_name_the_file(tmp_path, body, match):
    path = tmp_path / "seed.txt"
    path.write_bytes(body)
    with pytest.raises(MarkerError, match=match) as err:
        markers.parse(path)
    assert str(path) in str(err.value)


def test_overrides_come_from_the_bytes_the_signature_was_made_of(c, tmp_path):
    path = tmp_path / "seed.txt"
    path.write_text("count = 1\n")
    marker = markers.read(path)
    path.write_text("count = 2\n")  # saved again after the loop read it
    assert markers.parse(path, marker.data) == {"count": 1}


def test_error_file_parks_the_marker_until_it_is_edited(c):
    folder = make_draft(c, "20261125-120000-aaaa")
    (folder / "seed.txt").write_text("bad = 1")
    (seed,), _ = rounds.waiting(c)
    markers.write_error(seed.marker, "unknown key 'bad'")
    assert rounds.waiting(c) == ([], [seed.marker])
    assert "unknown key 'bad'" in (folder / "seed.error.txt").read_text()
    (folder / "seed.txt").write_text("count = 1")
    # a coarse clock (FAT, network drives) may give the edit the same mtime: the bytes changed
    os.utime(folder / "seed.txt", ns=(seed.marker.mtime_ns, seed.marker.mtime_ns))
    assert len(rounds.waiting(c)[0]) == 1
