"""Conventions used everywhere in imatch_s2ld (written down once, here).

- Pixel coordinates are ``(x, y)``: x to the right, y down. The **centre** of the top-left pixel is
  ``(0, 0)`` (OpenCV convention), so an image of width W spans ``[-0.5, W - 0.5]`` in x.
  COLMAP puts that centre at ``(0.5, 0.5)``; readers of COLMAP models subtract 0.5 from ``cx, cy``.
- Camera frame: x right, y down, z forward (OpenCV/COLMAP). A pinhole ``K`` maps camera
  coordinates ``X`` to pixels ``K @ X / X_z``.
- Poses are **world-to-camera** 4x4 matrices ``T_cw``: ``X_cam = R @ X_world + t``.
- ``T_0to1`` maps camera-0 coordinates to camera-1 coordinates: ``T_0to1 = T_1w @ inv(T_0w)``.
- Views and per-view quantities end in ``0`` / ``1`` (``image0``, ``kpts1``, ``K0``).
- Depth is the z coordinate in the camera frame (not the ray length); ``0`` marks "no depth".
- Resizing an image by ``(sx, sy)`` maps a pixel ``x`` to ``(x + 0.5) * sx - 0.5``, so intrinsics
  become ``fx' = fx * sx``, ``cx' = (cx + 0.5) * sx - 0.5`` (and likewise for y): see
  :func:`imatch_s2ld.geometry.camera.scale_intrinsics`.
"""
