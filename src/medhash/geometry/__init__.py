"""Planning geometry from CT and contours: structure names (:mod:`.names`), distance maps
(:mod:`.maps`), per-voxel features and the per-patient descriptor (:mod:`.features`), read from the
archive (:mod:`.load`); per-slice geometry images, the ``geometry`` feature channel (:mod:`.slices`).
Never reads a dose."""
from .features import (OVH_RADII_MM, VOXEL_FEATURES, descriptor_names, patient_descriptor, target_centroid,
                       voxel_features)
from .load import archive_geometry, patient_rows
from .maps import CLIP_MM, N_LEVELS, PatientGeometry, distance_maps, from_arrays, signed_distance
from .names import ORGANS, organ_name, parse_targets, structure_roles, target_level
from .slices import archive_geometry_images, geometry_images

__all__ = ["CLIP_MM", "N_LEVELS", "ORGANS", "OVH_RADII_MM", "PatientGeometry", "VOXEL_FEATURES",
           "archive_geometry", "archive_geometry_images", "geometry_images", "descriptor_names", "distance_maps", "from_arrays", "organ_name",
           "parse_targets", "patient_descriptor", "patient_rows", "signed_distance", "structure_roles",
           "target_centroid", "target_level", "voxel_features"]
