"""Image -> network input, one home (slim's ``preprocessing/``), every path side by side:

- `preprocess`: NumPy and Pillow only, the views a served export computes (the file an export
  user copies beside the model; no rankiqa import);
- `views`: the evaluation `Views` every command scores with, built on `preprocess`;
- `training`: the training crops, as TensorFlow ops inside tf.data;
- `normalise`: each network family's input convention, inside the graph (so exports carry it).

Loading and checking image files is `rankiqa.data.images`.
"""
