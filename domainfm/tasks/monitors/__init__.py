"""Label-free and label-light monitors for pretraining: RankMe, kNN accuracy, linear probe,
and reconstruction previews, with Lightning callbacks that log them (TensorBoard, CSV).

Example::

    >>> from domainfm.tasks.monitors import RankMeMonitor, ReconstructionPreview
    >>> trainer = L.Trainer(callbacks=[RankMeMonitor(every_n_steps=50),
    ...                                ReconstructionPreview(every_n_steps=100)])
"""

from domainfm.tasks.monitors.callbacks import (
    KNNMonitor,
    RankMeMonitor,
    SupportsEmbed,
    SupportsReconstructPreview,
)
from domainfm.tasks.monitors.knn import KNNClassifier, LinearProbe, knn_votes
from domainfm.tasks.monitors.preview import ReconstructionPreview, render_preview
from domainfm.tasks.monitors.rankme import RankMe, rankme

__all__ = [
    "KNNClassifier",
    "KNNMonitor",
    "LinearProbe",
    "RankMe",
    "RankMeMonitor",
    "ReconstructionPreview",
    "SupportsEmbed",
    "SupportsReconstructPreview",
    "knn_votes",
    "rankme",
    "render_preview",
]
