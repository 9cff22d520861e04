"""Workflows: compositions of core steps that the widgets, the CLI and scripts share.

- :mod:`.train`    training, then post-processing tuned on the version's validation part;
- :mod:`.tune`     post-processing tuned on validation images, saved with the model version;
- :mod:`.evaluate` a model version (and the classical baseline) scored on held-out images;
- :mod:`.predict`  a project's images or image files predicted in batch;
- :mod:`.segment`  segment-and-quantify: predict, post-process, measure every object;
- :mod:`.demo`     the whole loop on the bundled data, with its HTML report (:mod:`.report`).

Dependencies flow one way: widgets and cli -> workflows -> core.
"""
