"""Models: what turns a tile into a class, how it is trained, and how its answers score.

:class:`~satpipe.models.model.Model` wraps one *kind* (:mod:`satpipe.models.kinds`: threshold,
logistic regression, ONNX) with what every model carries; training picks the training tiles and
fits the kind; the scores (accuracy, balanced accuracy, per-class F1, the threshold fit) are the
arithmetic both training and evaluation use. A new kind of model goes in ``kinds/``.
"""
