"""Commands: what `golden` runs (render, validate, bake, verify, audit, publish, cluster), built on the
layers below."""
