import csv
import filecmp
import os

import pytest

from rankiqa.data import lists
from rankiqa.data.generate import BadImageError, make_rank_data


def read_rows(rank_list):
    with open(rank_list) as f:
        return list(csv.reader(f))


def test_rank_list_format_and_files(rank_data):
    rows = read_rows(rank_data)
    assert rows[0] == ["reference", "distortion", "level", "path"]
    groups = lists.read_rank_list(rank_data, levels=6)
    assert len(groups) == 6 * 4  # six photos x LIVE's four families
    for g in groups:
        assert len(g.paths) == 6 and all(os.path.isfile(p) for p in g.paths)
        assert g.paths[0].endswith(f"{g.reference}.png")  # level 0 is the pristine reference
    assert {g.distortion for g in groups} == {"gblur", "wn", "jpeg", "jp2k"}


def test_same_seed_same_bytes_whatever_the_workers(photo_dir, tmp_path):
    one = make_rank_data(photo_dir, str(tmp_path / "one"), ["wn", "jpeg"], seed=3, workers=1)
    two = make_rank_data(photo_dir, str(tmp_path / "two"), ["wn", "jpeg"], seed=3, workers=2)
    make_rank_data(photo_dir, str(tmp_path / "other"), ["wn"], seed=4, workers=1)
    assert read_rows(one["rank_list"]) == read_rows(two["rank_list"])
    for row in read_rows(one["rank_list"])[1:]:
        assert filecmp.cmp(tmp_path / "one" / row[3], tmp_path / "two" / row[3], shallow=False)
    noisy = "images/astronaut/astronaut_wn_3.png"
    assert not filecmp.cmp(tmp_path / "one" / noisy, tmp_path / "other" / noisy, shallow=False)


def two_photos(photo_dir, tmp_path):
    """A folder of copies of two sample photos."""
    src = tmp_path / "src"
    src.mkdir()
    for name in sorted(os.listdir(photo_dir))[:2]:
        (src / name).write_bytes(open(os.path.join(photo_dir, name), "rb").read())
    return src


@pytest.fixture
def dir_with_junk(photo_dir, tmp_path):
    src = two_photos(photo_dir, tmp_path)
    (src / "notes.jpg").write_text("not an image")
    return src


def test_non_image_is_named_and_nothing_is_left(dir_with_junk, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(BadImageError, match=r"notes\.jpg: not a readable image.*--skip-bad"):
        make_rank_data(str(dir_with_junk), str(out), ["gblur"])
    assert not out.exists()
    assert not [p for p in os.listdir(tmp_path) if "partial" in p]


def test_skip_bad_counts_skipped_files(dir_with_junk, tmp_path):
    summary = make_rank_data(str(dir_with_junk), str(tmp_path / "out"), ["gblur"], skip_bad=True)
    assert summary["references"] == 2
    assert len(summary["skipped_files"]) == 1 and "notes.jpg" in summary["skipped_files"][0]


def test_a_label_file_among_the_photos_is_left_out(photo_dir, tmp_path):
    src = two_photos(photo_dir, tmp_path)
    (src / "labels.csv").write_text("path,score\n")
    summary = make_rank_data(str(src), str(tmp_path / "out"), ["gblur"])  # no --skip-bad
    assert summary["references"] == 2 and summary["skipped_files"] == []


def test_a_fifo_among_the_photos_is_named_never_opened(dir_with_junk, tmp_path):
    os.mkfifo(dir_with_junk / "pipe.jpg")  # opening it would wait for a writer forever
    with pytest.raises(BadImageError, match=r"pipe\.jpg: not a regular file \(a FIFO\); "
                                            r"pass --skip-bad"):
        make_rank_data(str(dir_with_junk), str(tmp_path / "out"), ["gblur"])
    summary = make_rank_data(str(dir_with_junk), str(tmp_path / "out"), ["gblur"], skip_bad=True)
    assert summary["references"] == 2 and len(summary["skipped_files"]) == 2
    assert "pipe.jpg: not a regular file (a FIFO)" in summary["skipped_files"][0]


def test_existing_output_refused_without_force(photo_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(FileExistsError, match="--force"):
        make_rank_data(photo_dir, str(out), ["gblur"])
    make_rank_data(photo_dir, str(out), ["gblur"], force=True)
    assert (out / "rank_list.csv").is_file()


def test_grey_photo_skips_colour_only_family(tmp_path):
    import numpy as np
    from PIL import Image

    src = tmp_path / "src"
    src.mkdir()
    grey = (np.random.default_rng(0).uniform(0, 255, (40, 40))).astype(np.uint8)
    Image.fromarray(grey).convert("RGB").save(src / "grey.png")
    summary = make_rank_data(str(src), str(tmp_path / "out"), ["saturation", "gblur"])
    assert summary["skipped_families"] == {"saturation": ["grey"]}
    assert summary["groups"] == 1


def test_bad_arguments(photo_dir, tmp_path):
    with pytest.raises(ValueError, match="unknown distortion 'fog'"):
        make_rank_data(photo_dir, str(tmp_path / "o"), ["fog"])
    with pytest.raises(FileNotFoundError, match="neither a folder nor a list file"):
        make_rank_data(str(tmp_path / "nope"), str(tmp_path / "o"), ["gblur"])


def test_rank_list_errors_name_file_and_line(tmp_path):
    path = tmp_path / "rank_list.csv"
    path.write_text("reference,distortion,level,path\na,gblur,zero,x.png\n")
    with pytest.raises(lists.ListError, match=r"rank_list\.csv:2: level 'zero'"):
        lists.read_rank_list(str(path), check_files=False)
    path.write_text("reference,distortion,level,path\na,gblur,0,x.png\na,gblur,2,y.png\n")
    with pytest.raises(lists.ListError, match=r"a/gblur has levels \[0, 2\]"):
        lists.read_rank_list(str(path), check_files=False)
    path.write_text("ref,path\n")
    with pytest.raises(lists.ListError, match=r":1: expected the header"):
        lists.read_rank_list(str(path))


def test_sources_from_a_list_file(photo_dir, tmp_path):
    names = sorted(os.listdir(photo_dir))[:2]
    listing = tmp_path / "refs.txt"
    listing.write_text("# two references\n" + "".join(os.path.join(photo_dir, n) + "\n" for n in names))
    summary = make_rank_data(str(listing), str(tmp_path / "out"), ["gblur"])
    assert summary["references"] == 2
    listing.write_text("missing.png\n")
    with pytest.raises(FileNotFoundError, match="lists 1 missing files"):
        make_rank_data(str(listing), str(tmp_path / "out2"), ["gblur"])


def test_force_never_leaves_a_half_deleted_output_and_never_deletes_its_input(photo_dir, tmp_path,
                                                                              monkeypatch):
    out = tmp_path / "out"
    make_rank_data(photo_dir, str(out), ["gblur"])
    before = sorted(os.listdir(out / "images"))
    # interrupted between setting the old output aside and moving the new one in
    real_rename, calls = os.rename, []

    def interrupted(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", interrupted)
    with pytest.raises(KeyboardInterrupt):
        make_rank_data(photo_dir, str(out), ["gblur"], force=True)
    monkeypatch.setattr(os, "rename", real_rename)
    assert not out.exists()  # nothing that looks finished
    (aside,) = [p for p in os.listdir(tmp_path) if p.startswith("out.partial-old-")]
    assert sorted(os.listdir(tmp_path / aside / "images")) == before  # the old one, whole
    # the next command on OUT puts the old output back and drops the half-written one (as
    # left by a killed process: this one is alive, so give them a dead pid)
    os.rename(tmp_path / aside, tmp_path / "out.partial-old-999998")
    (tmp_path / "out.partial-999999").mkdir()
    with pytest.raises(FileExistsError, match="already exists; pass --force"):
        make_rank_data(photo_dir, str(out), ["gblur"])
    assert sorted(os.listdir(out / "images")) == before
    assert not [p for p in os.listdir(tmp_path) if ".partial" in p]
    for bad_out in (photo_dir, os.path.join(photo_dir, "inner")):
        with pytest.raises(ValueError, match="is, holds or lies inside the input"):
            make_rank_data(photo_dir, bad_out, ["gblur"], force=True)
    assert len(os.listdir(photo_dir)) == 6
