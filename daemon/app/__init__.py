"""The running daemon: :class:`~daemon.app.service.Service` wires engines, queue, pipeline and protocols
together; reload swaps configuration and engine live; systemd notification and journal logging.

May import every layer below: ``config``, ``vocabulary``, ``audio``, ``frontend``, ``speech``, ``model``,
``core``, ``protocols``.
"""
