"""Evaluation: judging a model's predictions, against reference labels and against training.

Against labels: the held-out tiles' accuracy, balanced accuracy and per-class scores, with the
plots' rows. Against training: drift statistics (KS, PSI, mean shift, class shift) graded into a
health report. A new check on a run's quality goes here.
"""
