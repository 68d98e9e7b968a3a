"""What `golden audit` runs inside a booted clone: SCAP content (ANSSI DAT-NT28), the guest tools disk, and the
OpenSCAP and Lynis results (artifact.py boots the clone and drives them)."""
