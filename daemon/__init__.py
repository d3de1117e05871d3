"""gsv-edge's runtime: text in over MQTT or Wyoming, speech out, all on the box (onnxruntime + numpy, never torch).

Subpackages are layers; each may import only those listed in its own ``__init__`` (tests/unit/test_layers.py checks
it). From the bottom up:

- ``config``, ``vocabulary``: the one settings model and the words every layer shares.
- ``audio``: WAV bytes, resampling, reference-clip checks, the sound card.
- ``frontend``: text -> phones (and the BERT tokenizer for Chinese text features).
- ``speech``: the :class:`~daemon.speech.synthesizer.Synthesizer` interface and the eSpeak NG voice.
- ``model``: the GPT-SoVITS engine: bundle, hardware profile, onnxruntime sessions, T2S, vocoder, voice store.
- ``core``: requests, the durable queue, events, the pipeline that speaks them, audit, metrics.
- ``protocols``: MQTT (native, Hermes, Home Assistant) and Wyoming, turning messages into requests and back.
- ``app``: the wiring (:class:`~daemon.app.service.Service`), reload, systemd, logging.
- ``commands``: the ``gsv-edge`` command line; the only layer that may import the offline ``quantize`` tooling.
"""
