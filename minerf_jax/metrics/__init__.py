"""Metrics: image (``image``: PSNR, SSIM, L1, colour leakage), landmarks (``landmarks``: AKD,
ARD), lip sync (``sync``: mouth opening vs speech energy, mouth LMD).

The image metrics are re-exported here (``metrics.psnr``); ``landmarks`` and ``sync`` need
MediaPipe for detection and are imported explicitly (``from minerf_jax.metrics import sync``).
"""
from minerf_jax.metrics.image import colour_leakage
from minerf_jax.metrics.image import l1
from minerf_jax.metrics.image import masked_mean_colour
from minerf_jax.metrics.image import mse
from minerf_jax.metrics.image import mse_to_psnr
from minerf_jax.metrics.image import psnr
from minerf_jax.metrics.image import ssim
from minerf_jax.metrics.image import ssim_map

__all__ = ["colour_leakage", "l1", "masked_mean_colour", "mse", "mse_to_psnr", "psnr", "ssim",
           "ssim_map"]
