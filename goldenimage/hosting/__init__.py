"""Hosting environments on a running infrastructure: `golden env` (the data model is model/environments.py)."""
