"""Getting drives in: validation (``validate``), landing-zone reports (``report``) and importers of real recordings (``importers``)."""
