"""Converge running hosts over SSH with the same profiles: `golden apply`, `golden cluster apply`."""
