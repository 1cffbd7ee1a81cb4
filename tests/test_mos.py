import os

import numpy as np
import pytest
from PIL import Image

from rankiqa import config
from rankiqa.data import mos
from rankiqa.data.lists import ListError
from rankiqa.errors import InputError


def touch_images(root, names):
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path, format="PNG")


def test_biq2021_names_with_spaces_and_parentheses(tmp_path):
    touch_images(tmp_path / "images", ["ss01 (1000).jpg", "ss01 (2).jpg"])
    (tmp_path / "mos.csv").write_text("Image Name,MOS\nss01 (1000).jpg,0.81\nss01 (2).jpg,0.25\n")
    items = mos.read_dataset("biq2021", str(tmp_path / "mos.csv"))
    assert [i.path.endswith("ss01 (1000).jpg") for i in items] == [True, False]
    assert [i.score for i in items] == [0.81, 0.25]
    assert all(i.reference is None for i in items)
    assert [i.group for i in items] == ["ss01", "ss01"]  # the kind of photo, from the name
    assert [mos.biq2021_kind(n) for n in ("ss03 (7).jpg", "dir/ss02 (1).jpg", "ss1.jpg",
                                          "ss01_x.jpg")] == ["ss03", "ss02", None, None]


def test_a_csv_group_column_names_each_photos_kind(tmp_path):
    touch_images(tmp_path, ["a.png", "b.png", "c.png"])
    (tmp_path / "l.csv").write_text("path,score,Kind\na.png,0.1,phone\nb.png,0.5,\nc.png,0.9,dslr\n")
    items = mos.read_dataset("csv", str(tmp_path / "l.csv"))
    assert [i.group for i in items] == ["phone", None, "dslr"]
    (tmp_path / "plain.csv").write_text("path,score\na.png,0.1\n")
    assert mos.read_dataset("csv", str(tmp_path / "plain.csv"))[0].group is None


def test_tid2013_is_normalised_with_references(tmp_path):
    touch_images(tmp_path / "distorted_images", ["i01_01_1.bmp", "I25_02_5.BMP"])
    (tmp_path / "mos_with_names.txt").write_text("5.4 i01_01_1.bmp\n0.9 i25_02_5.bmp\n")
    items = mos.read_dataset("tid2013", str(tmp_path / "mos_with_names.txt"))
    assert items[0].score == pytest.approx(5.4 / 9) and items[0].reference == "i01"
    assert items[1].path.endswith("I25_02_5.BMP")  # case differs from the label file
    assert items[1].distortion == "02"


def test_kadid_csiq_koniq_and_dmos_direction(tmp_path):
    touch_images(tmp_path / "images", ["I01_01_01.png", "I01_01_05.png"])
    (tmp_path / "dmos.csv").write_text(
        "dist_img,ref_img,dmos,var\nI01_01_01.png,I01.png,4.6,0.1\nI01_01_05.png,I01.png,1.5,0.2\n")
    kadid = mos.read_dataset("kadid10k", str(tmp_path / "dmos.csv"))
    assert kadid[0].score > kadid[1].score  # 1-5 rating, higher better: not flipped
    assert kadid[0].reference == "I01" and kadid[0].distortion == "01"

    csiq_root = tmp_path / "csiq"
    touch_images(csiq_root / "dst_imgs", ["awgn/1600.AWGN.1.png", "awgn/1600.AWGN.5.png"])
    (csiq_root / "csiq.csv").write_text(
        "image,dst_type,dst_lev,dmos\n1600,awgn,1,0.06\n1600,awgn,5,0.7\n")
    csiq = mos.read_dataset("csiq", str(csiq_root / "csiq.csv"))
    assert csiq[0].score == pytest.approx(0.94) and csiq[1].score == pytest.approx(0.3)  # flipped

    touch_images(tmp_path / "k" / "1024x768", ["a.jpg"])
    (tmp_path / "k" / "scores.csv").write_text('"image_name","MOS","SD"\n"a.jpg",3.0,0.5\n')
    assert mos.read_dataset("koniq10k", str(tmp_path / "k" / "scores.csv"))[0].score == 0.5


def test_live_release2_mat_files(tmp_path):
    from scipy import io as sio

    n = sum(c for _, c in mos.LIVE_FOLDERS)
    dmos = np.linspace(0, 100, n)
    orgs = np.zeros(n)
    orgs[1] = 1  # a reference copy: left out
    refs = np.array([f"ref{k % 29}.bmp" for k in range(n)], dtype=object)
    sio.savemat(tmp_path / "dmos.mat", {"dmos": dmos[None], "orgs": orgs[None]})
    sio.savemat(tmp_path / "refnames_all.mat", {"refnames_all": refs[None]})
    items = mos.read_dataset("live", str(tmp_path / "dmos.mat"), check_files=False)
    assert len(items) == n - 1
    assert items[0].path.endswith("jp2k/img1.bmp") and items[0].score == 1.0  # DMOS 0 -> best
    assert items[1].path.endswith("jp2k/img3.bmp") and items[1].reference == "ref2"
    assert items[-1].path.endswith("fastfading/img174.bmp") and items[-1].score == 0.0


def test_malformed_line_and_missing_image_are_named(tmp_path):
    touch_images(tmp_path, ["a.png"])
    (tmp_path / "l.csv").write_text("path,score\na.png,0.5\nb.png,high\n")
    with pytest.raises(ListError, match=r"l\.csv:3: score 'high' is not a number"):
        mos.read_dataset("csv", str(tmp_path / "l.csv"))
    (tmp_path / "l.csv").write_text("path,score\na.png,0.5\nmissing.png,0.1\n")
    with pytest.raises(ListError, match=r"image .*missing\.png does not exist"):
        mos.read_dataset("csv", str(tmp_path / "l.csv"))
    (tmp_path / "t.txt").write_text("5.0 i01_01_1.bmp extra\n")
    with pytest.raises(ListError, match=r"t\.txt:1: expected 'MOS name'"):
        mos.read_dataset("tid2013", str(tmp_path / "t.txt"))
    with pytest.raises(ValueError, match="unknown dataset 'live3'"):
        mos.read_dataset("live3", str(tmp_path / "t.txt"))


def test_csv_scores_on_another_scale_are_normalised_and_flipped_as_configured(tmp_path):
    touch_images(tmp_path, ["a.png", "b.png", "c.png"])
    (tmp_path / "l.csv").write_text("path,score\na.png,1\nb.png,4\nc.png,5\n")
    # a 1-5 rating read as if it were [0, 1] would train and report unnormalised scores
    with pytest.raises(ListError, match=r"b\.png has score 4, outside the range 0-1 .*set "
                                        r"data\.score_range"):
        mos.read_dataset("csv", str(tmp_path / "l.csv"))
    items = mos.read_dataset("csv", str(tmp_path / "l.csv"), score_range=(1, 5))
    assert [it.score for it in items] == [0.0, 0.75, 1.0] and items[1].raw == 4.0
    # DMOS-like (lower better): flipped, so that 1.0 is still the best image
    dmos = mos.read_dataset("csv", str(tmp_path / "l.csv"), score_range=(1, 5),
                            higher_is_better=False)
    assert [it.score for it in dmos] == [1.0, 0.25, 0.0]
    with pytest.raises(ListError, match=r"c\.png has score 5, outside the range 1-4"):
        mos.read_dataset("csv", str(tmp_path / "l.csv"), score_range=(1, 4))
    with pytest.raises(InputError, match=r"data\.score_range must be \[low, high\]"):
        mos.read_dataset("csv", str(tmp_path / "l.csv"), score_range=(5, 1))
    # through the config, as finetune and evaluate read it
    cfg = config.load(config.FinetuneConfig, None, [
        "data.dataset=csv", f"data.label_file={tmp_path / 'l.csv'}", "data.score_range=[1, 5]",
        "data.higher_is_better=false", "data.val_fraction=0"]).data
    assert [it.score for it in mos.load_splits(cfg)["train"]] == [1.0, 0.25, 0.0]


def items_with_refs(refs, per_ref=3):
    return [mos.ScoredImage(f"{r}_{k}.png", 0.5, 0.5, r, "d") for r in refs for k in range(per_ref)]


def test_split_by_reference_is_seeded_and_disjoint():
    items = items_with_refs([f"r{i}" for i in range(10)])
    a = mos.split(items, 0.2, 0.1, seed=1, split_index=0)
    b = mos.split(items, 0.2, 0.1, seed=1, split_index=0)
    c = mos.split(items, 0.2, 0.1, seed=1, split_index=1)
    assert a == b and a != c
    refs = {k: {i.reference for i in v} for k, v in a.items()}
    assert len(refs["val"]) == 2 and len(refs["test"]) == 1 and len(refs["train"]) == 7
    assert not (refs["val"] & refs["train"]) and not (refs["test"] & refs["train"])


def test_split_at_random_without_references():
    items = [mos.ScoredImage(f"{k}.png", 0.5, 0.5) for k in range(50)]
    parts = mos.split(items, 0.2, seed=0)
    assert len(parts["val"]) == 10 and len(parts["train"]) == 40
    with pytest.raises(ValueError, match="leave some training data"):
        mos.split(items, 0.6, 0.5)


def test_repeated_images_and_scores_out_of_range_are_refused(tmp_path):
    touch_images(tmp_path / "images", ["a.jpg", "b.jpg"])
    (tmp_path / "mos.csv").write_text("image,mos\na.jpg,0.5\nb.jpg,0.2\na.jpg,0.7\n")
    with pytest.raises(ListError, match=r"1 images are listed more than once \(e.g. a.jpg = a.jpg\)"):
        mos.read_dataset("biq2021", str(tmp_path / "mos.csv"))
    # one image under two spellings is one image: it could otherwise be in both parts
    (tmp_path / "sub").mkdir()
    (tmp_path / "mos.csv").write_text("image,mos\na.jpg,0.5\nb.jpg,0.2\n./a.jpg,0.7\n"
                                      "../images/b.jpg,0.1\n")
    with pytest.raises(ListError, match=r"2 images are listed more than once \(e.g. a.jpg = "
                                        r"./a.jpg; b.jpg = ../images/b.jpg\)"):
        mos.read_dataset("biq2021", str(tmp_path / "mos.csv"))
    (tmp_path / "mos.csv").write_text("image,mos\na.jpg,81\nb.jpg,20\n")  # a 0-100 file
    with pytest.raises(ListError, match=r"a.jpg has score 81, outside the range 0-1 "
                                        r"\(biq2021: MOS 0-1\); is data.dataset right\?"):
        mos.read_dataset("biq2021", str(tmp_path / "mos.csv"))


def test_loaded_splits_never_share_an_image(tmp_path):
    from rankiqa.config import MosDataConfig

    names = [f"i{k}.png" for k in range(30)]
    touch_images(tmp_path / "images", names)
    (tmp_path / "mos.csv").write_text("image,mos\n" + "".join(f"{n},{k / 30}\n"
                                                            for k, n in enumerate(names)))
    parts = mos.load_splits(MosDataConfig(dataset="biq2021", label_file=str(tmp_path / "mos.csv"),
                                          val_fraction=0.2, test_fraction=0.1))
    sets = [{it.path for it in parts[k]} for k in ("train", "val", "test")]
    assert [len(s) for s in sets] == [21, 6, 3] and len(set.union(*sets)) == 30


def test_extra_training_files_join_the_training_part_only(tmp_path):
    from rankiqa.config import MosDataConfig

    def labelled(folder, names):
        touch_images(tmp_path / folder / "images", names)
        (tmp_path / folder / "mos.csv").write_text(
            "image,mos\n" + "".join(f"{n},{k / 30}\n" for k, n in enumerate(names)))
        return str(tmp_path / folder / "mos.csv")

    main = labelled("main", [f"i{k}.png" for k in range(30)])
    more = labelled("more", [f"j{k}.png" for k in range(12)])
    plain = mos.load_splits(MosDataConfig(dataset="biq2021", label_file=main))
    parts = mos.load_splits(MosDataConfig(dataset="biq2021", label_file=main,
                                          extra_train_files=(more,)))
    assert parts["val"] == plain["val"]  # validation stays comparable
    assert len(parts["train"]) == len(plain["train"]) + 12
    assert sum("/more/images/" in it.path for it in parts["train"]) == 12
    with pytest.raises(ListError, match=r"more/mos.csv: 12 images are already listed"):
        mos.load_splits(MosDataConfig(dataset="biq2021", label_file=main,
                                      extra_train_files=(more, more)))


def test_label_files_in_utf16_are_read_and_other_encodings_named(tmp_path):
    touch_images(tmp_path / "images", ["caf\u00e9.jpg", "b.jpg"])
    text = "image,mos\ncaf\u00e9.jpg,0.5\nb.jpg,0.2\n"
    for encoding in ("utf-8", "utf-8-sig", "utf-16"):  # utf-16 writes its BOM, as Excel does
        (tmp_path / "mos.csv").write_bytes(text.encode(encoding))
        items = mos.read_dataset("biq2021", str(tmp_path / "mos.csv"))
        assert [os.path.basename(it.path) for it in items] == ["caf\u00e9.jpg", "b.jpg"]
    (tmp_path / "mos.csv").write_bytes(text.encode("latin-1"))
    with pytest.raises(ListError, match=r"mos.csv:2: not utf-8 text \(byte 0xe9\); save it as "
                                        r"UTF-8 .*iconv -f latin1"):
        mos.read_dataset("biq2021", str(tmp_path / "mos.csv"))


def test_a_fifo_in_a_label_file_is_named_not_missing(tmp_path):
    touch_images(tmp_path / "images", ["a.jpg"])
    os.mkfifo(tmp_path / "images" / "b.jpg")
    (tmp_path / "mos.csv").write_text("image,mos\na.jpg,0.5\nb.jpg,0.2\n")
    with pytest.raises(ListError, match=r"b.jpg is not a regular file \(a folder, a FIFO"):
        mos.read_dataset("biq2021", str(tmp_path / "mos.csv"))


def test_a_csv_names_its_columns_by_a_common_spelling_or_the_config(tmp_path):
    touch_images(tmp_path, ["a.jpg", "b.jpg"])
    (tmp_path / "mos.csv").write_text("image,MOS\na.jpg,0.5\nb.jpg,0.2\n")
    items = mos.read_dataset("csv", str(tmp_path / "mos.csv"))
    assert [(os.path.basename(it.path), it.raw) for it in items] == [("a.jpg", 0.5),
                                                                      ("b.jpg", 0.2)]
    (tmp_path / "own.csv").write_text("shot,stars,path\na.jpg,4,x.jpg\nb.jpg,2,y.jpg\n")
    with pytest.raises(ListError, match=r"own.csv:1: header needs a column score or mos or .*; "
                                        r"name the columns with data.path_column and "
                                        r"data.score_column"):
        mos.read_dataset("csv", str(tmp_path / "own.csv"))
    cfg = config.load(config.FinetuneConfig, None, [
        f"data.label_file={tmp_path / 'own.csv'}", "data.path_column=Shot",
        "data.score_column=stars", "data.score_range=[1, 5]", "data.val_fraction=0"])
    items = mos.load_splits(cfg.data)["all"]
    assert [(os.path.basename(it.path), it.raw, it.score) for it in items] == [
        ("a.jpg", 4.0, 0.75), ("b.jpg", 2.0, 0.25)]
    with pytest.raises(InputError, match="data.path_column and data.score_column are for "
                                         "data.dataset=csv"):
        mos.read_dataset("biq2021", str(tmp_path / "mos.csv"), path_column="image")


@pytest.mark.parametrize("score_range", [(0, float("inf")), (float("-inf"), 5),
                                         (-1e308, 1e308)])
def test_a_score_range_with_an_infinite_end_or_span_is_refused(tmp_path, score_range):
    """An infinite end maps every score to 0 and the model's scores back to infinity."""
    touch_images(tmp_path, ["a.png", "b.png"])
    (tmp_path / "l.csv").write_text("path,score\na.png,1\nb.png,4\n")
    with pytest.raises(InputError, match=r"data\.score_range must be \[low, high\], both finite"):
        mos.read_dataset("csv", str(tmp_path / "l.csv"), score_range=score_range)


def test_a_column_named_twice_in_any_case_is_refused(tmp_path):
    """`score` and `Score` both match: the last one would win without a word."""
    touch_images(tmp_path, ["a.png", "b.png"])
    (tmp_path / "l.csv").write_text("path,score,Score\na.png,0.9,0.1\nb.png,0.1,0.9\n")
    with pytest.raises(ListError, match=r"l\.csv:1: the header names 'score' twice"):
        mos.read_dataset("csv", str(tmp_path / "l.csv"))


def test_a_label_file_with_another_separator_or_not_a_file_is_named(tmp_path):
    (tmp_path / "semi.csv").write_text("path;score\na.png;0.5\n")
    with pytest.raises(ListError, match=r"semi.csv:1: the columns are separated by semicolons, "
                                        "not commas"):
        mos.read_dataset("csv", str(tmp_path / "semi.csv"))
    os.mkfifo(tmp_path / "fifo.csv")
    for path in (str(tmp_path / "fifo.csv"), "/dev/zero"):
        with pytest.raises(ListError, match=f"label file {path} is not a regular file"):
            mos.read_dataset("csv", path)
