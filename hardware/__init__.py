"""The hardware profiles shipped with gsv-edge (``*.toml``, package data), found by name with
:func:`importlib.resources.files` wherever the package is installed; ``engine.hardware_profile_dir`` holds
the user's own, which win by name."""
