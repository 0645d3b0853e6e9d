"""What every stage shares: the model grid (:mod:`.grid`) and the records that cross stages (:mod:`.records`)."""
