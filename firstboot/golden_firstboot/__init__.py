"""golden-firstboot: the in-image agent that finishes a golden image's role on its first boot.

Standard library only; runs on Debian 10's Python 3.7 through Debian 13's 3.13.
"""

__version__ = "1.0"
