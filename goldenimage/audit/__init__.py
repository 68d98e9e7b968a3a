"""`golden audit`: OpenSCAP (ANSSI DAT-NT28) and Lynis inside a booted, throw-away clone of an artifact."""
