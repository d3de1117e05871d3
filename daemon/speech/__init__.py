"""What "a voice that speaks text" means to the rest of the daemon: the
:class:`~daemon.speech.synthesizer.Synthesizer` interface, and eSpeak NG behind it (the voice that always works).

May import: ``daemon.config``, ``daemon.vocabulary``, ``daemon.audio``. The GPT-SoVITS engine (``daemon.model``)
implements the interface; the pipeline (``daemon.core``) only ever sees the interface.
"""
