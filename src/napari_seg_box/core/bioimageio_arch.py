"""The network of a napari-seg-box model with a distance output, as a bioimage.io package ships it.

This file is copied into the package as its architecture source, so it imports nothing but torch
and segmentation-models-pytorch. Its state dict is the U-Net's own (same keys as
``segmentation_models_pytorch.Unet``); its output is already probabilities: a softmax over the
``n_classes`` class channels and a sigmoid on the last channel, the normalised distance to the
object border. (Models without a distance output are shipped as the plain library U-Net with a
softmax post-processing step instead.)
"""

import segmentation_models_pytorch as smp
import torch


class UnetWithDistance(smp.Unet):
    """An smp U-Net whose output is (class probabilities, distance to the border)."""

    def __init__(self, n_classes: int, **kwargs):
        super().__init__(**kwargs)
        self.n_classes = int(n_classes)

    def forward(self, x):
        logits = super().forward(x)
        n = self.n_classes
        return torch.cat([torch.softmax(logits[:, :n], dim=1), torch.sigmoid(logits[:, n:])], dim=1)
