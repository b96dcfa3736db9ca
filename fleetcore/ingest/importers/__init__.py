"""``fleet import`` backends: real recordings → landing drives (see docs/importers.md).

Each importer writes one drive with :class:`fleetcore.landing.drives.DriveWriter` and raises
:class:`fleetcore.errors.SourceImportError` (naming the file and what was expected) for bad input.
"""

from fleetcore.ingest.importers.candump import import_candump
from fleetcore.ingest.importers.cars import CARS
from fleetcore.ingest.importers.comma2k19 import import_comma2k19
from fleetcore.ingest.importers.csvlog import import_csv
from fleetcore.ingest.importers.dashcam import import_dashcam
from fleetcore.ingest.importers.mcap import import_mcap
from fleetcore.ingest.importers.mdf import DEFAULT_MAPPING as MDF_DEFAULT_MAPPING
from fleetcore.ingest.importers.mdf import import_mdf

__all__ = ["CARS", "MDF_DEFAULT_MAPPING", "import_candump", "import_comma2k19", "import_csv", "import_dashcam", "import_mcap", "import_mdf"]
