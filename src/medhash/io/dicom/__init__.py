"""DICOM RT reader: CT series, RTDOSE and RTSTRUCT from folders → :class:`~medhash.core.records.Volume`.

Modules: :mod:`.files` (walking the sources, links followed once), :mod:`.codec` (SOP classes,
transfer syntaxes, the element walker, pixel decoders, values read and checked), :mod:`.ct` (a CT
series → HU), :mod:`.rtdose` (the dose grid and its resampling), :mod:`.rtstruct` (contours → masks on
the model grid), :mod:`.reader` (folders → volumes: scan, grouping by series and frame of reference,
the worker pool), :mod:`.query` (query slices). Other packages import the names below from here.
"""
from .codec import (COMPRESSED_SYNTAXES, CT_IMAGE_STORAGE, ENHANCED_CT_STORAGE, LOSSY_SYNTAXES,
                    MEDIA_STORAGE_DIRECTORY, RECEIVED_SOP_CLASSES, RECEIVED_SYNTAXES, RT_DOSE_STORAGE,
                    RT_PLAN_STORAGE, RT_STRUCT_STORAGE, UNCOMPRESSED_SYNTAXES, attach_pixel_data, decoded_pixels,
                    describe, is_lossy, missing_decoder, native_pixels, require, syntax_name, transfer_syntax,
                    walk_elements)
from .ct import CTSeries, pixel_hu, read_ct_series, spacing_warnings
from .query import read_query
from .reader import DicomScan, iter_files, read_dicom, read_header, read_series_job, scan, series_to_volume
from .rtdose import DoseGrid, choose_dose, read_dose
from .rtstruct import contour_points, polygon_mask, rasterise_structure_set

__all__ = ["COMPRESSED_SYNTAXES", "CT_IMAGE_STORAGE", "CTSeries", "DicomScan", "DoseGrid", "ENHANCED_CT_STORAGE",
           "LOSSY_SYNTAXES", "MEDIA_STORAGE_DIRECTORY", "RECEIVED_SOP_CLASSES", "RECEIVED_SYNTAXES",
           "RT_DOSE_STORAGE", "RT_PLAN_STORAGE", "RT_STRUCT_STORAGE", "UNCOMPRESSED_SYNTAXES", "attach_pixel_data",
           "choose_dose", "contour_points", "decoded_pixels", "describe", "is_lossy", "iter_files",
           "missing_decoder", "native_pixels", "pixel_hu", "polygon_mask", "rasterise_structure_set",
           "read_ct_series", "read_dicom", "read_dose", "read_header", "read_query", "read_series_job", "require",
           "scan", "series_to_volume", "spacing_warnings", "syntax_name", "transfer_syntax", "walk_elements"]
