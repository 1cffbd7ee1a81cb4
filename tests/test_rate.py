"""rankiqa rate: the page's answers reach the file before the next question, undo, several
raters, a restart that goes on; and the page itself, driven by keyboard in headless Chromium."""

import http.client
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from PIL import Image

from click.testing import CliRunner

from rankiqa.cli import main
from rankiqa.data import judgements
from rankiqa.errors import InputError
from rankiqa.judge import page
from rankiqa.serve import service

COLOURS = [(200, 30, 30), (30, 160, 30), (30, 30, 200), (220, 200, 40), (20, 180, 190),
           (180, 40, 170), (240, 140, 20), (90, 90, 90)]


@pytest.fixture
def photos(tmp_path):
    """Eight photos of one flat colour each (a screenshot tells which is shown where); one TIFF,
    which a browser cannot show."""
    folder = tmp_path / "photos"
    folder.mkdir()
    paths = []
    for k, colour in enumerate(COLOURS):
        path = folder / f"p{k}.{'tif' if k == 7 else 'png'}"
        Image.new("RGB", (300, 200), colour).save(path)
        paths.append(str(path))
    return paths


def running(photos, output, **setup):
    collection = page.Collection(page.Setup(tuple(photos), str(output), **setup))
    sock, url = service.bind("127.0.0.1", 0)
    return service.Running(page.create_app(collection), sock), url, collection


def call(url, path, body=None):
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.request("GET" if body is None else "POST", path,
                           None if body is None else json.dumps(body),
                           {"Content-Type": "application/json"})
        response = connection.getresponse()
        data = response.read()
        kind = response.getheader("Content-Type")
        return response.status, json.loads(data) if kind == "application/json" else data
    finally:
        connection.close()


def lines(path):
    return open(path).read().splitlines()


def test_each_answer_is_on_disk_before_the_next_question_and_undo_appends(photos, tmp_path):
    output = tmp_path / "judgements.csv"
    server, url, _ = running(photos, output, kind="random")
    with server:
        status, state = call(url, "/api/next?rater=ana")
        assert status == 200 and state["yours"] == 0 and len(state["item"]) == 2
        asked = []
        for choice in ("left", "right", "tie"):
            asked.append(state["item"])
            status, state = call(url, "/api/answer", {"rater": "ana", "item": state["item"],
                                                      "choice": choice})
            assert status == 200 and len(lines(output)) == 1 + len(asked)  # header + answers
        assert state["yours"] == 3 and state["undo"]
        status, state = call(url, "/api/undo", {"rater": "ana"})
        assert status == 200 and state["item"] == asked[-1] and state["yours"] == 2
        assert lines(output)[-1].split(",")[2] == "undo" and not state["undo"]
        status, error = call(url, "/api/undo", {"rater": "ana"})
        assert status == 400 and "nothing to undo" in error["error"]
    read = judgements.read_pairs(str(output), photos)
    assert [g.outcome for g in read.judgements] == [1.0, 0.0] and read.problems() == []
    assert [[photos.index(p) for p in (g.left, g.right)] for g in read.judgements] == asked[:2]


def test_bad_requests_get_one_clear_error_each(photos, tmp_path):
    server, url, _ = running(photos, tmp_path / "judgements.csv")
    with server:
        _, state = call(url, "/api/next?rater=ana")
        cases = [("/api/next?rater=", None, "a rater's name is 1-40 letters"),
                 ("/api/next?rater=a,b", None, "a rater's name"),
                 ("/api/answer", {"rater": "ana", "item": [0, 0], "choice": "left"},
                  "no longer the one asked"),
                 ("/api/answer", {"rater": "ana", "item": state["item"], "choice": "both"},
                  "choice must be one of left, right, tie"),
                 ("/api/answer", {"rater": "ana"}, "a bad request"),
                 ("/api/answer", [1, 2], "must be a JSON object")]
        for path, body, message in cases:
            status, error = call(url, path, body)
            assert status == 400 and message in error["error"], (path, error)
        assert call(url, "/photo/8")[0] == 404
        status, data = call(url, "/photo/7")  # the TIFF, sent as PNG with its pixels
        assert status == 200 and Image.open(io.BytesIO(data)).getpixel((5, 5)) == COLOURS[7]
    assert not (tmp_path / "judgements.csv").exists()  # no answer was taken, none written


def test_raters_share_a_batch_without_being_asked_the_same_pair_and_a_restart_goes_on(
        photos, tmp_path):
    output = tmp_path / "judgements.csv"
    server, url, _ = running(photos, output, kind="active", seed=3)
    with server:
        seen = []
        for _ in range(4):
            for rater in ("ana", "ben"):
                _, state = call(url, f"/api/next?rater={rater}")
                seen.append(tuple(sorted(state["item"])))
                call(url, "/api/answer", {"rater": rater, "item": state["item"],
                                          "choice": "left"})
        assert len(set(seen[:7])) == 7  # one batch (7 pairs): every pair asked once
    server, url, collection = running(photos, output, kind="active", seed=3)
    with server:
        assert collection.done["ana"] and len(collection.answers.i) == 8
        _, state = call(url, "/api/next?rater=ana")
        assert state["yours"] == 4 and state["all"] == 8
        call(url, "/api/answer", {"rater": "ana", "item": state["item"], "choice": "tie"})
    assert len(judgements.read_pairs(str(output), photos).judgements) == 9


def test_score_mode_asks_each_photo_once_per_rater_and_scale_averages(photos, tmp_path):
    output = tmp_path / "ratings.csv"
    server, url, _ = running(photos[:3], output, mode="score")
    with server:
        rated = []
        for score in ("5", "3", "1"):
            _, state = call(url, "/api/next?rater=ana")
            rated.append(state["item"][0])
            call(url, "/api/answer", {"rater": "ana", "item": state["item"], "choice": score})
        _, state = call(url, "/api/next?rater=ana")
        assert sorted(rated) == [0, 1, 2] and state["item"] is None and state["progress"] == 1
        _, state = call(url, "/api/next?rater=ben")
        assert state["yours"] == 0 and state["item"] is not None
    read = judgements.read_ratings(str(output), photos)
    assert sorted((photos.index(r.photo), r.score) for r in read.judgements) == sorted(
        zip(rated, (5, 3, 1)))


def test_a_file_of_another_kind_or_collection_is_refused_before_serving(photos, tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("path,score\nphotos/p0.png,3\n")
    with pytest.raises(InputError, match="is not a pairs file of rankiqa rate"):
        page.Collection(page.Setup(tuple(photos), str(labels)))
    other = tmp_path / "other.csv"
    other.write_text("left,right,choice,rater,time\nx/a.png,x/b.png,left,ana,2026-12-07T10:31:02Z\n")
    with pytest.raises(InputError, match="another collection's file"):
        page.Collection(page.Setup(tuple(photos), str(other)))
    with pytest.raises(InputError, match="needs at least 2 photos"):
        page.Setup(tuple(photos[:1]), str(other))


# -- the page in a real browser ---------------------------------------------------------------

def chromium():
    """A headless Chromium through Debian's chromedriver, or a skip where it is not installed
    (CI installs it: .ci/run)."""
    if not (shutil.which("chromedriver") and shutil.which("chromium")):
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install chromium "
                    "chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    # the flags a closed network and a root user need: no sandbox, no background connections
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--no-first-run", "--disable-background-networking", "--disable-sync",
                 "--disable-component-update", "--window-size=1200,800"):
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={os.environ.get('TMPDIR', '/tmp')}/rankiqa-chromium-"
                         f"{os.getpid()}-{time.monotonic_ns()}")
    return webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))


def start_rate(folder, output):
    """`rankiqa rate` as a user starts it, on a free port; its URL from its first line."""
    process = subprocess.Popen([sys.executable, "-m", "rankiqa", "rate", str(folder), "--output",
                                str(output), "--port", "0", "--pairs", "active"],
                               stderr=subprocess.PIPE, text=True)
    before = []  # warnings about the file read back come first
    for line in iter(process.stderr.readline, ""):
        if " at http://127.0.0.1:" in line:
            return process, line.split(" at ")[1].split(" ")[0]
        before.append(line)
    raise AssertionError("rankiqa rate stopped before serving: " + "".join(before))


def stop(process):
    process.send_signal(signal.SIGINT)
    rest = process.stderr.read()
    assert process.wait(timeout=60) == 0, rest
    return rest


def answer_by_keyboard(browser, keys):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    body = browser.find_element(By.TAG_NAME, "body")
    for key in keys:
        before = int(body.get_attribute("data-answers"))
        body.send_keys(key)
        WebDriverWait(browser, 20).until(
            lambda b: int(body.get_attribute("data-answers")) != before)


def colours_shown(browser):
    """The flat colour at the middle of each half of a screenshot."""
    shot = Image.open(io.BytesIO(browser.get_screenshot_as_png())).convert("RGB")
    width, height = shot.size
    return [shot.getpixel((x, height // 2)) for x in (width // 4, 3 * width // 4)], shot.size


def test_the_page_end_to_end_in_chromium_keys_restart_undo(photos, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    output = tmp_path / "judgements.csv"
    folder = os.path.dirname(photos[0])
    keys = [Keys.ARROW_LEFT, Keys.ARROW_RIGHT, Keys.ARROW_DOWN, " "] * 5
    browser = chromium()
    try:
        for round_ in range(2):
            process, url = start_rate(folder, output)
            try:
                browser.get(url if round_ == 0 else url + "?rater=ana")
                if round_ == 0:  # the name form first, as a new rater meets it
                    field = browser.find_element(By.ID, "rater")
                    field.send_keys("ana", Keys.ENTER)
                    WebDriverWait(browser, 20).until(lambda b: "rater=ana" in b.current_url)
                WebDriverWait(browser, 20).until(
                    lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-answers"))
                shown, size = colours_shown(browser)
                item = browser.execute_script("return state.item")
                assert shown == [COLOURS[k] for k in item], (shown, item)  # side by side
                fits = browser.execute_script(
                    "return [...document.images].map(i => i.getBoundingClientRect().bottom "
                    "<= innerHeight && i.naturalWidth > 0)")
                assert fits == [True, True]
                answer_by_keyboard(browser, keys)
                assert len(lines(output)) == 1 + 20 * (round_ + 1)
                count = browser.find_element(By.ID, "count").text
                assert count.startswith(f"{20 * (round_ + 1)} yours"), count
            finally:
                last = stop(process)
            assert f"{20 * (round_ + 1)} answers in" in last
        read = judgements.read_pairs(str(output), photos)
        assert len(read.judgements) == 40 and {g.rater for g in read.judgements} == {"ana"}
        assert [g.choice for g in read.judgements[:4]] == ["left", "right", "tie", "tie"]
        process, url = start_rate(folder, output)  # undo after a restart: the file's last answer
        try:
            browser.get(url + "?rater=ana")
            WebDriverWait(browser, 20).until(
                lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-answers"))
            answer_by_keyboard(browser, [Keys.BACKSPACE])
        finally:
            stop(process)
        assert lines(output)[-1].split(",")[2] == "undo"
        assert len(judgements.read_pairs(str(output), photos).judgements) == 39
    finally:
        browser.quit()
    tiny = ["net.name=resnet_v2_tiny", "data.crop_size=32", "data.batch_size=2",
            "data.eval_crops=1", "train.max_steps=2", "train.log_every=1",
            "signals.judgement_pairs_per_batch=4"]
    result = CliRunner().invoke(main, ["finetune", "--init", "scratch", "--train-dir",
                                       str(tmp_path / "run"), "--set",
                                       f"data.label_file={output}",
                                       *[a for t in tiny for a in ("--set", t)]])
    assert result.exit_code == 0, result.output
    assert "labels from people's comparisons: 39 answers on 8 photos" in result.output


def test_rate_refuses_what_it_cannot_serve_before_listening(photos, tmp_path):
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(main, ["rate", str(tmp_path / "empty"), "--output",
                                       str(tmp_path / "j.csv"), "--port", "0"])
    assert result.exit_code == 1 and "needs at least 2 photos, got 0" in result.output
    labels = tmp_path / "labels.csv"
    labels.write_text("path,score\nphotos/p0.png,3\n")
    result = CliRunner().invoke(main, ["rate", os.path.dirname(photos[0]), "--output",
                                       str(labels), "--port", "0"])
    assert result.exit_code == 1 and "is not a pairs file of rankiqa rate" in result.output
    assert labels.read_text() == "path,score\nphotos/p0.png,3\n"  # nothing lost


def test_the_models_scores_become_the_prior_of_active_pairs(stage_one, photo_dir):
    from rankiqa import cli
    from rankiqa.serve import predict

    paths = sorted(os.path.join(photo_dir, n) for n in os.listdir(photo_dir))
    with predict.load_model(stage_one) as model:
        expected = model.score(paths)
    got = cli.model_scores(stage_one, paths)
    assert got == pytest.approx(expected, abs=1e-6)
    mean, _ = page.pairs_lib.model_prior(got, 0.7)
    assert list(mean.argsort()) == list(got.argsort())


def test_more_raters_than_a_batch_has_pairs_are_each_asked(photos, tmp_path):
    """Two photos make a batch of one pair: a second and third rater get it too."""
    collection = page.Collection(page.Setup(tuple(photos[:2]), str(tmp_path / "j.csv"),
                                            kind="random"))
    asked = [collection.question(rater)["item"] for rater in ("ana", "ben", "cy")]
    assert [sorted(item) for item in asked] == [[0, 1]] * 3
