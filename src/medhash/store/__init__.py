"""The archive folder: catalog and arrays (:mod:`.archive`), and durable file writes (:mod:`.durable`)."""
