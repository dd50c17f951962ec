"""Where a model's starting weights come from: published CAV-MAE checkpoints by name or URL (:mod:`.zoo`, cached
and verified downloads) and their import into an :class:`~uvav.models.classifier.AVClassifier` (:mod:`.cavmae`).
Above :mod:`uvav.models`: the models know nothing of files, downloads or user errors."""
