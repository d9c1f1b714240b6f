"""Image recognition: preprocessing shared by training and serving, the backbone, Grad-CAM.

``aiforge.vision.preprocess`` and ``aiforge.vision.decode`` are torch-free (the Runtime uses
them); ``aiforge.vision.model`` needs PyTorch.
"""
