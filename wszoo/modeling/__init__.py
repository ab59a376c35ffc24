"""The GN+WS detectors as modules: layers, backbone, anchors, RPN, RoI heads, box ops, transforms.

:func:`~wszoo.modeling.detector.build_detector` composes them into torchvision's
``GeneralizedRCNN`` (:class:`~wszoo.modeling.detector.WSRCNN`). Nothing here knows about the zoo
table, files or the network.
"""
