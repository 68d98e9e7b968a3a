"""goldenimage: golden-image factory and first-boot configurator for Debian server fleets."""

from pathlib import Path

__version__ = "0.1.0"

#: The repository (or installed source tree) root: profiles/ and firstboot/ live here.
SOURCE_ROOT = Path(__file__).resolve().parent.parent
