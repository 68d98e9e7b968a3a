"""Artifact store: where images and caches live, content keys, naming, manifests, atomic writes."""
