"""rankiqa: no-reference image quality assessment learned from rankings (RankIQA, ICCV 2017).

Import submodules explicitly (``from rankiqa import losses``); importing the package itself does
not load TensorFlow. Scoring photos from Python:

    import rankiqa
    with rankiqa.load_model() as model:              # the default built-in model
        print(model.score(["photo.jpg"]), model.scale)
"""

__version__ = "0.1.0"


def load_model(model=None, **kwargs):
    """`rankiqa.predict.load_model`: a built-in model's name (default), a training folder or
    checkpoint prefix, or an export-npy ``.npz`` -> a `rankiqa.predict.Model` with ``score``."""
    from rankiqa import predict  # TensorFlow loads here, not at `import rankiqa`

    return predict.load_model(model, **kwargs)
