"""The extract stage: datasets, media decoding, upstream models and the store writer."""
