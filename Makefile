# goldenimage front door. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
GOLDEN := $(VENV)/bin/golden
PROFILE ?= web
DEBIAN ?= 12
TARGET ?= qemu
ARGS ?=
OVERLAYS ?=
OVERLAY_ARGS := $(foreach o,$(OVERLAYS),--overlay $(o))

.DEFAULT_GOAL := help

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import ensurepip' 2>/dev/null || { echo "python3-venv is missing: run sudo make deps (or apt-get install python3-venv)" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-z][a-z-]*:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-14s %s\n", $$1, $$2}'

.PHONY: venv
venv: $(VENV)/.installed ## Create the Python environment (.venv) with goldenimage installed

.PHONY: deps
deps: ## Install the system packages goldenimage needs (Debian 12; as root)
	./scripts/install-deps

.PHONY: profiles
profiles: venv ## Show the profiles, their roles and releases
	$(GOLDEN) profiles

.PHONY: render
render: venv ## Render PROFILE for DEBIAN and TARGET into rendered/ (PACKER_VERSION=X.Y: for that Packer)
	$(GOLDEN) render $(PROFILE) --debian $(DEBIAN) --target $(TARGET) $(OVERLAY_ARGS) $(if $(PACKER_VERSION),--packer-version $(PACKER_VERSION))

.PHONY: validate
validate: venv ## Render every profile x release x target and check with packer validate and cloud-init schema
	$(GOLDEN) validate --all

.PHONY: base
base: host-tools venv ## Build (or reuse) the base image for DEBIAN from the Debian mirror
	$(GOLDEN) base --debian $(DEBIAN)

.PHONY: doctor
doctor: venv ## What this build host has and lacks (cores, accelerator and why, QEMU, OVMF, Packer, mirrors, space)
	$(GOLDEN) doctor

.PHONY: host-tools
host-tools: ## Check the host tools; as root, install what is missing
	@missing=""; for t in packer cloud-init mmdebstrap qemu-system-x86_64 qemu-img parted grub-mkimage ssh-keygen; do \
	  command -v $$t >/dev/null || missing="$$missing $$t"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then echo "installing host tools (missing:$$missing)"; ./scripts/install-deps; \
	  else echo "missing host tools:$$missing; run: sudo make deps" >&2; exit 1; fi; fi

.PHONY: image
image: host-tools venv ## Bake PROFILE for DEBIAN into images/ (compressed qcow2, .sha256, manifest; ARGS=--kind metal for dedicated servers)
	$(GOLDEN) build $(PROFILE) --debian $(DEBIAN) $(OVERLAY_ARGS) $(ARGS)

.PHONY: verify
verify: host-tools venv ## Boot the newest PROFILE artifact fresh and run its testinfra suite (ARGS=--firmware uefi, or --all-firmwares)
	$(GOLDEN) verify $(PROFILE) --debian $(DEBIAN) $(ARGS)

.PHONY: audit
audit: host-tools venv ## Boot the newest PROFILE artifact and score it: OpenSCAP ANSSI DAT-NT28 high and Lynis (ARGS=--min-rules 45 --min-lynis 80)
	$(GOLDEN) audit $(PROFILE) --debian $(DEBIAN) $(ARGS)

.PHONY: lint
lint: venv ## ruff and mypy, the first-boot agent included (ruff for Python 3.7; mypy's oldest, 3.10)
	$(VENV)/bin/ruff check goldenimage tests firstboot setup.py
	$(VENV)/bin/mypy
	MYPYPATH=firstboot $(VENV)/bin/mypy --python-version 3.10 -p golden_firstboot

.PHONY: test-fast
test-fast: venv ## Fast tests only (no virtual machines)
	$(VENV)/bin/pytest -m 'not vm' -q

.PHONY: publish
publish: venv ## Publish the newest PROFILE artifact to TARGET (openstack, s3, ovh-dedicated, proxmox); ARGS=... for more
	$(GOLDEN) publish $(PROFILE) --debian $(DEBIAN) --to $(TARGET) $(ARGS)

.PHONY: test-publish
test-publish: venv ## Publishing tests against local S3 (moto), Keystone/Glance, Proxmox VE and OVH API servers
	$(VENV)/bin/pytest tests/publish -v

FLOOR_VENV ?= .venv-floor
.PHONY: test-floor
test-floor: ## Publishing tests with the lowest openstacksdk, proxmoxer, boto3 and ovh pyproject.toml allows (own venv, .venv-floor)
	@$(PYTHON) -c 'import ensurepip' 2>/dev/null || { echo "python3-venv is missing: run sudo make deps (or apt-get install python3-venv)" >&2; exit 1; }
	rm -rf $(FLOOR_VENV)
	$(PYTHON) -m venv $(FLOOR_VENV)
	./scripts/floor-constraints > $(FLOOR_VENV)/constraints.txt
	$(FLOOR_VENV)/bin/pip install -q --upgrade pip
	$(FLOOR_VENV)/bin/pip install -q -c $(FLOOR_VENV)/constraints.txt -e '.[test]'
	$(FLOOR_VENV)/bin/pip list 2>/dev/null | grep -iE '^(openstacksdk|proxmoxer|boto3|botocore|ovh) '
	$(FLOOR_VENV)/bin/pytest tests/publish -q -p no:cacheprovider

.PHONY: test-cluster
test-cluster: host-tools venv ## Multi-VM cluster tests (bakes the images they need, boots them on a private network)
	$(VENV)/bin/pytest -m 'cluster or cluster_web' -v

.PHONY: test-starved
test-starved: host-tools venv ## Both clusters on a starved host (1 vCPU per guest, a host CPU hog), twice in a row
	$(VENV)/bin/pytest -m starved -v -s
	$(VENV)/bin/pytest -m starved -v -s

.PHONY: test-extended
test-extended: host-tools venv ## VM tests kept out of CI for time: base boots per firmware, encryption at rest, more cluster cases
	$(VENV)/bin/pytest -v -m 'extended and not cluster_web and not audit and not starved and not matrix and not ha and not apply and not hardware and not env'

.PHONY: test-watch
test-watch: host-tools venv ## A real Prometheus on 127.0.0.1 scrapes lb + 2 web + nfs, then the SQL pair; each failure raises its own alerts, which resolve after the repair
	$(VENV)/bin/pytest -m watch -v -s tests/e2e/test_watch.py

.PHONY: test-all
test-all: host-tools venv ## Every test there is (hours under TCG)
	$(VENV)/bin/pytest -v

.PHONY: test
test: venv ## What CI runs: the fast suite plus the VM tests that prove the point (web bake + verify, SQL pair, lb + 2 web + nfs); prints its time
	@start=$$(date +%s); $(VENV)/bin/pytest -q -m 'not audit and not starved and not extended and not matrix and not ha and not apply and not plesk and not watch and not hardware and not env and not backup and not proxmox_bake and not differential and not upgrade'; rc=$$?; \
	  echo "make test: $$(( $$(date +%s) - start )) s"; exit $$rc

.PHONY: test-hardware
test-hardware: host-tools venv ## Targets' hardware and datasources beyond make test: metadata service, Proxmox drive (BIOS and UEFI), web and sql-primary for metal (bakes them; ~1.5 h under TCG)
	$(VENV)/bin/pytest -m hardware -v tests/e2e/test_targets.py

.PHONY: test-proxmox-bake
test-proxmox-bake: host-tools venv ## The Proxmox bake played locally: a clone with qemu-server's cloud-init drive, the rendered provisioners over SSH, the disk read offline (profile applied, no build account; ~10 min under TCG)
	$(VENV)/bin/pytest -m proxmox_bake -v -s tests/e2e/test_proxmox_bake.py

.PHONY: test-differential
test-differential: host-tools venv ## web and banking-hardened baked natively and by cloud-init in a VM from one package layer; the two systems compared (allow-list in tests/e2e/system_diff.py)
	$(VENV)/bin/pytest -m differential -v -s tests/e2e/test_differential.py

.PHONY: test-ha
test-ha: host-tools venv ## HA drill: 2 lb + 2 web + 2 Galera + nfs + a client; kills the active lb, a web node and the SQL writer under load (HA_RATE, HA_DWELL, HA_MAX_SECONDS)
	$(VENV)/bin/pytest -m ha -v -s tests/e2e/test_ha.py::test_each_single_failure_is_survived_and_repaired_without_a_hand

.PHONY: test-ha-sql
test-ha-sql: host-tools venv ## the short HA drill: the lb pair and the Galera pair with a mysql client (5 guests); kills the active lb and the SQL writer
	$(VENV)/bin/pytest -m ha -v -s tests/e2e/test_ha.py::test_lb_pair_and_galera_survive_the_loss_of_the_active_lb_and_of_the_sql_writer

.PHONY: test-upgrade
test-upgrade: host-tools venv ## Rolling upgrade (cluster upgrade --apply) and rolling reboot of the HA infrastructure under the drill's load: 0 failed requests, p99 < 2 s
	$(VENV)/bin/pytest -m upgrade -v -s tests/e2e/test_upgrade.py

.PHONY: test-env
test-env: host-tools venv ## Hosting environments on lb + 2 web + nfs + the SQL pair: create, change, prune three; isolation; certificates from Pebble on the host
	$(VENV)/bin/pytest -m env -v -s tests/e2e/test_env.py

.PHONY: test-apply
test-apply: host-tools venv ## golden apply to bare guests (the base image + an SSH key): web and the SQL pair on Debian 12, web on 11 (skipped, naming the file, while the mirror cannot build its base)
	$(VENV)/bin/pytest -m apply -v

.PHONY: test-backup
test-backup: host-tools venv ## Backup drill: SQL pair + a fresh SQL host, nanio on 127.0.0.1; PITR to the second before a DROP TABLE, then RPO after losing the primary
	$(VENV)/bin/pytest -m backup -v -s tests/e2e/test_backup_drill.py

.PHONY: test-plesk
test-plesk: host-tools venv ## plesk's pipeline with a stand-in for Plesk's installer (served on 127.0.0.1): bake with an overlay's settings, verify (plesk suite), licence at first boot
	$(VENV)/bin/pytest -m plesk -v

.PHONY: test-audit
test-audit: host-tools venv ## banking-hardened: verify (hardened suite) and the audit end to end, ANSSI >= 45/50, Lynis >= 80 (~45 min under TCG)
	$(VENV)/bin/pytest -m audit -v

.PHONY: test-matrix
test-matrix: host-tools venv ## web on Debian 11, 12, 13 and banking-hardened on 12, 13: bake, verify under BIOS, UEFI, Secure Boot (hours; ARGS="-k web-13")
	$(VENV)/bin/pytest -v -m matrix tests/e2e/test_matrix.py $(ARGS)

.PHONY: profile-reference
profile-reference: venv ## Write README's profile reference anew from the keys the profile schema declares
	$(VENV)/bin/python -m goldenimage.model.profile_reference README.md

.PHONY: clean
clean: ## Remove rendered output and Python caches (not images/ or the base cache)
	rm -rf rendered .pytest_cache .mypy_cache .ruff_cache
