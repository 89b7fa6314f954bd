"""2-D image-animation parts: the Thin-Plate-Spline Motion Model (TPSMM) base, NHWC float32.

* ``warp``: ``[-1, 1]`` coordinate grids, bilinear ``grid_sample`` (PyTorch ``align_corners=True``
  semantics, zeros/border/reflection padding), corner-aligned resizing, flow composition.
* ``tps``: thin-plate splines fitted on keypoint groups, affine and background transforms,
  random deformations for the equivariance loss.
* ``keypoints``: ResNet-18 keypoint detector (K x 5 points) and background motion predictor.
* ``dense_motion``: conv blocks, hourglass, dense motion network (flow + occlusion masks).
* ``generator``: inpainting encoder / warp / decoder with the warped features exposed.
* ``transfer``: relative keypoint motion transfer for animation.
* ``params``: parameter counts of the vox-256 configuration via ``jax.eval_shape``.
"""
