"""Scenes of any size: rasters with their georeferencing <-> scene `.vqz` files (version 7).

tiling (the tile grid, windows, smooth side maps), networks (the model over windows),
raster_input (a scene's rasters, checked, read in windows), container (the file format),
scene_codec (the passes over tile rows), raster_output (GeoTIFF / COG per band), files (the
pipelines under the output policy: compress_scene, decompress_scene, read_region).
"""

from vqae.scene.files import compress_scene, decompress_scene, read_region

__all__ = ["compress_scene", "decompress_scene", "read_region"]
