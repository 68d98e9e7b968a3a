"""goldenimage: golden-image factory and first-boot configurator for Debian server fleets.

The code reads top-down in the order of the flow, profiles -> render -> bake -> verify -> publish, and each
package imports only the packages listed before it in `LAYERS` (and itself); tests/unit/test_layers.py
reads every import and enforces it, with no exceptions:

========== ============== ==========================================================================
layer      package        what lives there
========== ============== ==========================================================================
core       core           errors, run (every external command), log, paths + shipped data, output dirs,
                          fs helpers, SSH key pairs, the strict schema base and its error lines
model      model          releases, values, role settings, disk layouts, profiles + schema, clusters
producers  render         cloud-init user-data and seed, Packer templates, first-boot bundle, checks
producers  bake           the bake pipeline (plan, stages, typed manifest), base and disk builders, Packer
                          runs, accelerator, the artifact store, validation of rendered files, the
                          build host's checks (doctor)
services   verify         the VM harness (boot a clone, its seed, wait, SSH), L2 switch, cluster VMs, an
                          artifact's verify run (clones, testinfra suites)
services   audit          SCAP content, guest tools, OpenSCAP and Lynis results, an artifact's audit run
services   publish        publish targets (OpenStack, S3, Proxmox, OVH)
services   apply          a running host over SSH: transport, inventory, converge and role steps, clusters
services   hosting        environments on a running cluster (`golden env`): SQL writer, web nodes, ACME
services   rolling        rolling upgrades and reboots of a running cluster: order, drain, change, wait, put back
commands   commands       one module per command with its add_parser: parse, then call the layers below
commands   cli            the `golden` front door (argparse)
========== ============== ==========================================================================

The first-boot agent (firstboot/, stdlib only) runs inside images and stays apart from this package.
"""

from pathlib import Path

__version__ = "0.1.0"

#: Packages in import order, grouped by layer: a module may import its own package and the ones before it.
#: The root module (this file) holds only constants and imports nothing from the package.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("core", ("core",)),
    ("model", ("model",)),
    ("producers", ("render", "bake")),
    ("services", ("verify", "audit", "publish", "apply", "hosting", "rolling")),
    ("commands", ("commands", "cli")),
)

#: The repository (or installed source tree) root: profiles/ and firstboot/ live here.
SOURCE_ROOT = Path(__file__).resolve().parent.parent
