"""Model: releases, value types, role settings, disk layouts, profiles and their schema, clusters."""
