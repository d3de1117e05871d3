"""Requests and what happens to them: the in-memory and durable queues, events, the pipeline that synthesises
and plays them, the rendered-audio cache, the state database, audit log, metrics, the Status page's recent timings
and the box's disk and memory, the MQTT outbox and the HTTP API's bearer tokens.

May import: ``daemon.config``, ``daemon.vocabulary``, ``daemon.audio``, ``daemon.speech``. Not ``daemon.model``:
the pipeline speaks through the :class:`~daemon.speech.synthesizer.Synthesizer` interface, so tests drive it
with doubles and the fallback voice needs no model.
"""
