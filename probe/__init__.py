"""The probe stage: heads trained from a feature store. Never imports the extract stage."""
