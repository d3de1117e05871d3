"""Audio as bytes and as sound: WAV encode/decode, resampling, cross-fades, reference-clip checks, sound-card output.

May import: ``daemon.config``, ``daemon.vocabulary``. Knows nothing of models, requests or protocols.
"""
