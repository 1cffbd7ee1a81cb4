"""`rankiqa rate`: a local web page where people compare photos two at a time (or rate them
1-5), every answer appended to a judgement file before the next question shows.

    GET  /                 the page (one HTML file, its script inline: no build step)
    GET  /api/next?rater=  the rater's current question and the progress
    POST /api/answer       {"rater", "item", "choice"}: the answer, on disk, then the next one
    POST /api/undo         {"rater"}: takes back the rater's last answer (a line ``undo``),
                           and asks it again
    GET  /photo/{k}        the collection's k-th photo (by number only: no path is taken)

Several raters answer at once, each by name; pairs are handed out from one shared batch
(`rankiqa.judge.pairs`), so that no pair is asked twice while a batch lasts. Restarted on the
same file, the page reads the answers back and goes on where they stopped.
"""

import dataclasses
import os
import re
import threading

import numpy as np

from rankiqa.data import judgements as judgements_lib
from rankiqa.data.lists import ListError
from rankiqa.errors import InputError
from rankiqa.judge import pairs as pairs_lib

MODES = ("pairs", "score")
BROWSER_SHOWS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp")  # others sent as PNG
RATER = re.compile(r"^[\w][\w .-]{0,39}$")  # a name, shown and written as typed
HERE = os.path.dirname(os.path.abspath(__file__))


@dataclasses.dataclass(frozen=True)
class Setup:
    """What `rankiqa rate` was asked: the photos, the file, the questions and their number."""

    photos: tuple
    output: str
    mode: str = "pairs"
    kind: str = "active"
    target: int = 0  # answers in all; 0: 5 per photo (pairs: each photo in ~10), 1 per photo
    seed: int = 0
    prior_mean: object = None  # per photo, JOD (`pairs.model_prior`), or None
    prior_sd: object = pairs_lib.thurstone.PRIOR_SD

    def __post_init__(self):
        if self.mode not in MODES:
            raise InputError(f"unknown --mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if self.kind not in pairs_lib.KINDS:
            raise InputError(f"unknown --pairs {self.kind!r}; choose one of "
                             f"{', '.join(pairs_lib.KINDS)}")
        if len(self.photos) < (2 if self.mode == "pairs" else 1):
            raise InputError(f"--mode {self.mode} needs at least "
                             f"{2 if self.mode == 'pairs' else 1} photos, got {len(self.photos)}")
        if self.mode == "pairs" and self.kind == "active" and len(self.photos) > pairs_lib.MAX_ACTIVE:
            raise InputError(f"--pairs active takes {pairs_lib.MAX_ACTIVE} photos at most (a "
                             f"dense covariance), got {len(self.photos)}: choose --pairs random")

    @property
    def header(self):
        return judgements_lib.PAIR_HEADER if self.mode == "pairs" else judgements_lib.RATING_HEADER

    @property
    def goal(self):
        return self.target or len(self.photos) * (5 if self.mode == "pairs" else 1)


class Collection:
    """The state the page serves from: the answers so far (read back from the file), each
    rater's current question and last answer, and the batch of pairs still to ask. One lock:
    an answer is written, counted and the next question chosen as one step."""

    def __init__(self, setup):
        self.setup = setup
        self.photos = [os.path.abspath(p) for p in setup.photos]
        self.index = {os.path.realpath(p): k for k, p in enumerate(self.photos)}
        self.root = os.path.dirname(os.path.abspath(setup.output))
        self.lock = threading.Lock()
        self.rng = np.random.default_rng(setup.seed)
        self.current, self.last, self.queue = {}, {}, []
        self.answers = pairs_lib.Answers.none()
        self.done = {}  # rater -> answers given (score mode: the photos they rated)
        self.warnings = self._read_back()

    def _read_back(self):
        """The file's answers, so that a restart goes on from them; its problems, as lines."""
        if not os.path.isfile(self.setup.output) or os.path.getsize(self.setup.output) == 0:
            return []
        if judgements_lib.header_of(self.setup.output) != self.setup.header:
            raise InputError(f"{self.setup.output} is not a {self.setup.mode} file of "
                             f"rankiqa rate (first line {','.join(self.setup.header)}): name "
                             "another --output")
        reader = (judgements_lib.read_pairs if self.setup.mode == "pairs"
                  else judgements_lib.read_ratings)
        try:
            read = reader(self.setup.output, self.photos)
        except ListError as e:
            raise InputError(f"{e}: name another --output, or the photos it was made for") \
                from None
        for g in read.judgements:
            if self.setup.mode == "pairs":
                self._count(g.rater, (self._k(g.left), self._k(g.right)), g.outcome)
            else:
                self._count(g.rater, (self._k(g.photo),), g.score)
        return read.problems()

    def _k(self, path):
        return self.index[os.path.realpath(path)]

    def _count(self, rater, item, value):
        if len(item) == 2:
            self.answers = self.answers.add(item[0], item[1], value)
        self.done.setdefault(rater, []).append(item)
        self.last[rater] = item

    def question(self, rater):
        """The rater's question (a pair of photo numbers, or one) and the progress."""
        with self.lock:
            if rater not in self.current:
                self.current[rater] = self._next(rater)
            return self._state(rater)

    def _next(self, rater):
        if self.setup.mode == "score":
            rated = {item[0] for item in self.done.get(rater, [])}
            left = [k for k in range(len(self.photos)) if k not in rated]
            order = np.random.default_rng([self.setup.seed, len(rated)]).permutation(left)
            return (int(order[0]),) if len(order) else None
        out = {tuple(sorted(q)) for r, q in self.current.items() if q and r != rater}
        free = self._free(out)
        if free is None:
            self.queue = pairs_lib.next_batch(
                self.setup.kind, len(self.photos), self.answers, self.rng,
                self.setup.prior_mean, self.setup.prior_sd)
            # more raters than a batch has pairs: one pair is then asked of two of them
            free = self._free(out) or 0
        return self.queue.pop(free)

    def _free(self, out):
        """The place in the batch of the first pair no other rater is answering, or None."""
        return next((k for k, pair in enumerate(self.queue) if tuple(sorted(pair)) not in out),
                    None)

    @property
    def given(self):
        """Answers in the file that stand (undone ones dropped), every rater's."""
        return sum(len(v) for v in self.done.values())

    def _state(self, rater):
        item = self.current.get(rater)
        mine = len(self.done.get(rater, []))
        return {"mode": self.setup.mode, "rater": rater, "item": list(item) if item else None,
                "yours": mine, "all": self.given, "goal": self.setup.goal,
                "progress": min(1.0, (mine if self.setup.mode == "score" else self.given)
                                / self.setup.goal),
                "undo": rater in self.last}

    def answer(self, rater, item, choice):
        """Appends the answer (fsync) and counts it, then chooses the rater's next question."""
        with self.lock:
            expected = self.current.get(rater)
            if expected is None or list(expected) != list(item):
                raise InputError("that question is no longer the one asked of this rater "
                                 "(answered in another window?): the page shows the current one")
            value = self._value(choice)
            self._append(item, choice, rater)
            self._count(rater, tuple(item), value)
            self.current[rater] = self._next(rater)
            return self._state(rater)

    def _value(self, choice):
        choice = str(choice).lower()
        if self.setup.mode == "pairs":
            if choice not in judgements_lib.CHOICES:
                raise InputError(f"choice must be one of {', '.join(judgements_lib.CHOICES)}")
            return {"left": 1.0, "right": 0.0, "tie": 0.5}[choice]
        if choice not in judgements_lib.RATINGS:
            raise InputError("a rating is a whole number from 1 to 5")
        return int(choice)

    def _append(self, item, choice, rater):
        paths = [os.path.relpath(self.photos[k], self.root) for k in item]
        judgements_lib.append(self.setup.output,
                              paths + [str(choice).lower(), rater, judgements_lib.now()],
                              self.setup.header)

    def undo(self, rater):
        """Takes back the rater's last answer (an ``undo`` line) and asks it again."""
        with self.lock:
            item = self.last.pop(rater, None)
            if item is None:
                raise InputError("nothing to undo: no answer of this rater since the last undo")
            self._append(item, judgements_lib.UNDO, rater)
            self.done[rater].remove(item)
            if len(item) == 2:
                self._forget(item)
                if self.current.get(rater):
                    self.queue.insert(0, self.current[rater])
            self.current[rater] = item
            return self._state(rater)

    def _forget(self, item):
        """Drops the latest answer to the pair `item` from the answers the pairs are chosen by."""
        a = self.answers
        hits = np.flatnonzero((a.i == item[0]) & (a.j == item[1]))
        keep = np.ones(len(a.i), bool)
        keep[hits[-1]] = False
        self.answers = pairs_lib.Answers(a.i[keep], a.j[keep], a.outcome[keep])


def as_png(path):
    """A photo a browser cannot show (TIFF, say) as PNG bytes, its pixels as every command
    reads them."""
    import io

    from PIL import Image

    from rankiqa.data import images as images_lib

    buffer = io.BytesIO()
    Image.fromarray(images_lib.load_image(path)).save(buffer, "PNG")
    return buffer.getvalue()


def check_rater(name):
    name = (name or "").strip()
    if not RATER.match(name):
        raise InputError("a rater's name is 1-40 letters, digits, spaces, dots, dashes or "
                         "underscores, starting with a letter or digit")
    return name


def create_app(collection):
    """The Starlette app serving `collection` (a `Collection`)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
    from starlette.routing import Route

    page = open(os.path.join(HERE, "page.html"), encoding="utf-8").read()

    def guarded(handler):  # every bad request: one JSON error, never a trace
        async def endpoint(request: Request):
            try:
                return JSONResponse(await handler(request))
            except (InputError, ValueError, KeyError, TypeError) as e:
                message = str(e) if isinstance(e, InputError) else f"a bad request ({e})"
                return JSONResponse({"error": message}, status_code=400)
        return endpoint

    async def body(request):
        data = await request.json()
        if not isinstance(data, dict):
            raise InputError("the request's body must be a JSON object")
        return data

    async def next_question(request):
        return collection.question(check_rater(request.query_params.get("rater")))

    async def answer(request):
        data = await body(request)
        return collection.answer(check_rater(data.get("rater")), list(data["item"]),
                                 data["choice"])

    async def undo(request):
        return collection.undo(check_rater((await body(request)).get("rater")))

    async def photo(request):
        k = request.path_params["k"]
        if not 0 <= k < len(collection.photos):
            return JSONResponse({"error": f"no photo {k}"}, status_code=404)
        path, cache = collection.photos[k], {"Cache-Control": "max-age=3600"}
        if path.lower().endswith(BROWSER_SHOWS):
            return FileResponse(path, headers=cache)
        return Response(as_png(path), media_type="image/png", headers=cache)

    async def index(request):
        return HTMLResponse(page.replace("{{MODE}}", collection.setup.mode))

    return Starlette(routes=[
        Route("/", index), Route("/api/next", guarded(next_question)),
        Route("/api/answer", guarded(answer), methods=["POST"]),
        Route("/api/undo", guarded(undo), methods=["POST"]),
        Route("/photo/{k:int}", photo)])
