"""rankiqa: no-reference image quality assessment learned from rankings (RankIQA, ICCV 2017).

Import submodules explicitly (``from rankiqa import losses``); importing the package itself does
not load TensorFlow. Scoring photos from Python:

    import rankiqa
    with rankiqa.load_model() as model:              # the default built-in model
        print(model.score(["photo.jpg"]), model.scale)

`create_metric` is the same under pyiqa's name (``rankiqa.create_metric()(image)``).
"""

__version__ = "0.1.0"


def load_model(model=None, net=None, device="auto", batch_size=64, precision="fp32",
               allow_pickle=False, engine="auto", normalised=False):
    """A quality model ready to score (`rankiqa.serve.predict.Model`): ``model.score(images)``.

    Args:
      model: a built-in model's name (`list_models`; None: the default one), a training folder
        or checkpoint prefix, or an ``.npz`` from ``rankiqa export-npy`` (with `net`).
      net: the network's name, for a model that records none.
      device: auto | cpu | gpu.
      batch_size: views per run of the network.
      precision: fp32 | mixed | auto (16-bit compute where the hardware has it).
      allow_pickle: let `model` be a pickled ``.npy`` dict (a pickle can run code).
      engine: auto (the faster of TensorFlow and ONNX Runtime here, where they agree) |
        tensorflow | onnx.
      normalised: scores in [0, 1] with higher better, as a fine-tuned model trained on them;
        default: on its labels' own scale and direction (``model.score_range``,
        ``model.lower_better``).
    """
    from rankiqa.serve import predict  # TensorFlow loads here, not at `import rankiqa`

    return predict.load_model(model, net=net, device=device, batch_size=batch_size,
                              precision=precision, allow_pickle=allow_pickle, engine=engine,
                              normalised=normalised)


def create_metric(metric_name=None, device=None, as_loss=False, **kwargs):
    """`load_model` under pyiqa's name and arguments, for code written for pyiqa:
    ``rankiqa.create_metric("biq2021-efficientnet-lite2-ranked")(image)``. `metric_name` is a
    built-in model's name (`list_models`), a training folder or checkpoint prefix (None: the
    default); `device` "cuda" or "cpu" (pyiqa's; None: whichever is there); the other keyword
    arguments are `load_model`'s. Unlike pyiqa's, the model gives NumPy scores, not tensors,
    and cannot be a loss."""
    from rankiqa.errors import InputError

    if as_loss:
        raise InputError("rankiqa models score images; they cannot be used as a loss")
    devices = {None: "auto", "cuda": "gpu", "gpu": "gpu", "cpu": "cpu", "auto": "auto"}
    if str(device).split(":")[0] not in {str(k) for k in devices}:
        raise InputError(f"device {device!r}: choose cuda, cpu or None")
    chosen = devices[None if device is None else str(device).split(":")[0]]
    return load_model(metric_name, device=chosen, **kwargs)


def list_models():
    """The built-in models' names, the default first (`rankiqa models` describes each)."""
    from rankiqa.weights import builtin  # numpy only

    return [builtin.DEFAULT] + sorted(n for n in builtin.BUILTIN if n != builtin.DEFAULT)
