"""What a model's scores mean: the scale its labels were on, and the one it trains on.

Stage two trains on scores normalised to [0, 1] with higher better (`rankiqa.data.mos`), whatever
the label file's scale (1-5, 0-100) or direction (DMOS). A model reports on its labels' own
scale by default (``[1, 5]``, lower better for DMOS): the scoring graph maps its normalised
output back (`Scale.from_normalised`, one multiply-add), so `predict`, `load_model` and every
graph export agree. ``normalised=True`` keeps the [0, 1] scores the metrics compare.
"""

import dataclasses
from typing import Optional

from rankiqa.errors import InputError


@dataclasses.dataclass(frozen=True)
class Scale:
    """What scores mean (`text`), and their range and direction where known (`low`/`high`
    None for an open scale: stage one's ranking scores, a model without rankiqa.json)."""

    text: str
    low: Optional[float] = None
    high: Optional[float] = None
    higher_is_better: bool = True

    @property
    def score_range(self):
        return None if self.low is None else (self.low, self.high)

    @property
    def is_normalised(self):
        """Whether scores are the network's own output (nothing to map)."""
        return self.low is None or (self.low, self.high, self.higher_is_better) == (0.0, 1.0, True)

    def from_normalised(self, scores):
        """Normalised scores (a NumPy array or a tensor) on this scale."""
        if self.is_normalised:
            return scores
        span = self.high - self.low
        return self.low + span * scores if self.higher_is_better else self.high - span * scores

    def as_dict(self):
        return {"score_scale": self.text,
                "score_range": list(self.score_range) if self.score_range else None,
                "higher_is_better": self.higher_is_better}


def of_model(info, normalised=False):
    """The `Scale` of a model's scores, from its ``rankiqa.json`` (`info`; {} without one): a
    fine-tuned model's labels' scale (its ``data.dataset``, ``data.score_range`` and
    ``data.higher_is_better``), or with `normalised` the [0, 1] one it trained on."""
    if info.get("score_scale"):  # a built-in model states its own: BIQ2021's MOS is in [0, 1]
        return Scale(info["score_scale"], 0.0, 1.0)
    stage = info.get("stage")
    if stage in ("finetune", "adapt"):  # adapt: `rankiqa calibrate`, the labels' scale too
        data = (info.get("config") or {}).get("data", {})
        dataset = data.get("dataset", "?")
        normal = Scale(f"normalised MOS in [0, 1] ({dataset}), higher is better", 0.0, 1.0)
        if normalised:
            return normal
        from rankiqa.data import mos  # NumPy only

        try:
            spec = mos.get_dataset_spec(dataset, data.get("score_range") or None,
                                        data.get("higher_is_better"))
        except InputError:  # a dataset this version does not know: its scores as trained
            return normal
        way = "higher" if spec.higher_is_better else "lower"
        return Scale(f"the labels' scale, [{spec.low:g}, {spec.high:g}] ({dataset}), {way} is "
                     "better", spec.low, spec.high, spec.higher_is_better)
    if stage == "pretrained":
        return Scale("an untrained head on pretrained features: the scores mean nothing")
    if stage == "rank":
        return Scale("uncalibrated ranking score (stage one only), higher is better")
    return Scale("the model's output (no rankiqa.json: scale unknown), higher is better")
