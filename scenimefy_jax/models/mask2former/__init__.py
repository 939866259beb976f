"""Mask2Former (semantic segmentation, Swin backbone) in Flax, NHWC (docs/reference.md §5)."""
