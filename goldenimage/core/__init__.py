"""Core: errors, running external commands, logging, cache and image paths, output directories."""
