"""Network access to DICOM services: pulling from a PACS (DIMSE, DICOMweb) and listening for pushes."""
