"""Face geometry and masks: everything between an image batch and the network's aligned crops.

- ``detect``: batched face detection (RetinaFace) -> boxes, scores, 5-point landmarks;
- ``selection``: which faces to restore (size/mask filters, order, pick);
- ``align``: alignment templates, similarity fit, batched affine warps;
- ``paste``: feathered masks and paste-back into the images;
- ``tracking``: faces linked into tracks across video frames (gaps filled, false detections dropped);
- ``reference``: which faces differ from the picture before a face swap;
- ``parsing``: face-parsing masks; ``color``: colour correction; ``temporal``: landmark smoothing.
"""
