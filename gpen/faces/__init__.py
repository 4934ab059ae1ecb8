"""Face geometry and masks: everything between an image batch and the network's aligned crops.

- ``detect``: batched face detection (RetinaFace) -> boxes, scores, 5-point landmarks;
- ``selection``: which faces to restore (size/mask filters, order, pick);
- ``align``: alignment templates, similarity fit, batched affine warps;
- ``paste``: feathered masks and paste-back into the images;
- ``parsing``: face-parsing masks; ``color``: colour correction; ``temporal``: tracks and smoothing.
"""
