"""FlexUNet: liver and liver-tumour CT segmentation, successor of TensorFlowFlexUNet."""
__version__ = "0.1.0"
