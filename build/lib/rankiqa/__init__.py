"""rankiqa: no-reference image quality assessment learned from rankings (RankIQA, ICCV 2017).

Import submodules explicitly (``from rankiqa import losses``); importing the package itself does
not load TensorFlow.
"""

__version__ = "0.1.0"
