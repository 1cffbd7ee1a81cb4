"""rankiqa: no-reference image quality assessment learned from rankings (RankIQA, ICCV 2017).

Import submodules explicitly (``from rankiqa import losses``); importing the package itself does
not load TensorFlow. Scoring photos from Python:

    import rankiqa
    with rankiqa.load_model() as model:              # the default built-in model
        print(model.score(["photo.jpg"]), model.scale)
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


def list_models():
    """The built-in models' names, the default first (`rankiqa models` describes each)."""
    from rankiqa.weights import builtin  # numpy only

    return [builtin.DEFAULT] + sorted(n for n in builtin.BUILTIN if n != builtin.DEFAULT)
