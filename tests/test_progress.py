from rankiqa.run import progress


def test_durations_and_time_left():
    assert [progress.duration(s) for s in (0, 12.4, 190, 7500)] == [
        "0 s", "12 s", "3 min 10 s", "2 h 05 min"]
    assert progress.time_left(0, 10, 5.0) is None
    assert progress.time_left(25, 100, 50.0) == 150.0


def test_off_a_terminal_about_ten_lines_with_rate_and_time_left():
    now, lines = [0.0], []
    bar = progress.Progress("scored", 100, lambda line, end: lines.append((line, end)),
                            clock=lambda: now[0])
    for done in range(7, 101, 7):  # uneven steps still give one line per tenth
        now[0] = done * 0.5
        bar.update(done)
    bar.update(100)
    assert len(lines) == 10 and all(end == "\n" for _, end in lines)
    assert lines[0][0] == "scored 14/100, 2.0/s, 43 s left"
    assert lines[-1][0] == "scored 100/100, 2.0/s, 49 s"  # at the end: the time it took


def test_on_a_terminal_every_update_redraws_one_line():
    lines = []
    bar = progress.Progress("probe", 3, lambda line, end: lines.append(end), tty=True,
                            clock=lambda: 1.0)
    for done in (1, 2, 3):
        bar.update(done)
    assert lines == ["\r", "\r", "\n"]
