"""The build step that ships profiles/ and firstboot/ inside the wheel, as goldenimage/_data/.

They stay at the top of the source tree (the flow a reader sees: profiles -> render -> bake, and the agent
apart from the host tool); at run time goldenimage.core.paths.shipped() finds the copy or the checkout.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SHIPPED = ("profiles", "firstboot")


class BuildWithData(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):  # an editable install reads the checkout itself
            return
        root = Path(__file__).resolve().parent
        for name in SHIPPED:
            target = Path(self.build_lib) / "goldenimage" / "_data" / name
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(root / name, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


setup(cmdclass={"build_py": BuildWithData})
