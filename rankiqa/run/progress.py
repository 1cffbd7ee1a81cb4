"""Progress of long work (scoring folders, making ranking data, the probe's features,
training): count, rate and time left. On a terminal one line is redrawn in place; elsewhere
(a log file, CI) about ten plain lines per run are written, so that logs stay readable."""

import time


def duration(seconds):
    """``2 h 05 min``, ``3 min 10 s``, ``12 s``."""
    seconds = int(round(max(0.0, seconds)))
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds} s"


def time_left(done, total, elapsed):
    """Estimated seconds left at the mean rate so far; None before any work is done."""
    if done <= 0 or elapsed <= 0:
        return None
    return (total - done) * elapsed / done


class Progress:
    """``update(done)`` after each piece of `total`: `write(line, end)` gets
    ``"{what} {done}/{total}, {rate}/s, {left} left"``; on a terminal (`tty`) each line replaces
    the last (end "\\r", "\\n" at the end), else about ten lines in all."""

    def __init__(self, what, total, write, tty=False, clock=time.monotonic):
        self.what, self.total, self.write, self.tty, self.clock = what, total, write, tty, clock
        self.start, self.every = clock(), max(1, total // 10)
        self.next_line = self.every  # off a terminal: at each tenth of the work, and the end

    def update(self, done):
        """`done` of `total` pieces finished; 0 (re)starts the clock."""
        if done == 0:
            self.start = self.clock()
            return
        if not (self.tty or done >= self.next_line or done == self.total):
            return
        self.next_line = (done // self.every + 1) * self.every
        elapsed = self.clock() - self.start
        line = f"{self.what} {done}/{self.total}"
        if done and elapsed > 0:
            line += f", {done / elapsed:.1f}/s"
            left = time_left(done, self.total, elapsed)
            line += f", {duration(left)} left" if done < self.total else f", {duration(elapsed)}"
        self.write(line, "\n" if done == self.total or not self.tty else "\r")
