"""Building the model: `penguin-api train` (train.py) and `penguin-api evaluate` (evaluate.py).

Needs the ``[train]`` extra (torch, the EfficientNet-Lite0 wheels, onnx, matplotlib);
the service itself never imports this package.
"""
