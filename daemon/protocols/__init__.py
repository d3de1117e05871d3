"""The ways text arrives and audio leaves: MQTT (native, Hermes, Home Assistant discovery, voice registration)
and Wyoming. Each turns its messages into :class:`~daemon.core.request_queue.Request` objects and the pipeline's
events and audio back into its own messages.

May import: ``daemon.config``, ``daemon.vocabulary``, ``daemon.audio``, ``daemon.speech``, ``daemon.core``.
"""
