"""The ``gsv-edge`` command line: one module per subcommand (``cli`` lists them), exit codes, engine options.

May import every layer, and is the only one that may import ``quantize`` (the offline torch tooling behind
``convert``, ``quantize``, ``make-demo`` and checkpoint ``inspect``), always lazily.
"""
