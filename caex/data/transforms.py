"""Bring images from any source to one square size and channel count."""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: ITU-R BT.601 luma weights, the usual RGB -> grayscale conversion.
LUMA = (0.299, 0.587, 0.114)


def resize_and_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """Scale ``[N, C, H, W]`` so the shorter side is ``size``, then crop the centre square.

    Bilinear with antialiasing, so downscaling does not alias and upscaling is smooth.
    """
    height, width = images.shape[-2:]
    if (height, width) == (size, size):
        return images
    scale = size / min(height, width)
    new_height, new_width = max(size, round(height * scale)), max(size, round(width * scale))
    resized = F.interpolate(images, size=(new_height, new_width), mode="bilinear",
                            align_corners=False, antialias=True)
    top, left = (new_height - size) // 2, (new_width - size) // 2
    return resized[..., top:top + size, left:left + size].clamp(0, 1)


def is_grey(images: torch.Tensor) -> bool:
    """One channel, or colour channels that are all equal (greyscale saved as RGB); alpha does not count."""
    if images.shape[1] == 1:
        return True
    colour = images[:, :3]
    return bool((colour == colour[:, :1]).all())


def to_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """Convert ``[N, C, H, W]`` (C = 1, 3 or 4) to 1 (luma) or 3 channels; alpha is dropped."""
    if images.shape[1] == 4:
        images = images[:, :3]
    if images.shape[1] == channels:
        return images
    if channels == 3:
        return images.expand(-1, 3, -1, -1).contiguous()
    weights = torch.tensor(LUMA, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True)
