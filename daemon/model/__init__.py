"""The GPT-SoVITS engine on onnxruntime: bundle and manifest, hardware profiles and sessions, text features, T2S
decoding, the vocoder, speaker features and the voice store, composed by :class:`~daemon.model.engine.Engine`.

May import: ``daemon.config``, ``daemon.vocabulary``, ``daemon.audio``, ``daemon.frontend``, ``daemon.speech``.
Never torch: bundles are made offline by ``quantize``.
"""
