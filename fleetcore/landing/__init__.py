"""The landing zone's format: drive folders, manifests, listing and writing drives (``drives``)."""
