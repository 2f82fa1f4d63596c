"""Amanuensis: a self-hosted speech-to-text service on WhisperX with an NPU log-mel front-end.

Importing the package silences, in this one place, the start-up messages of libraries the service
uses in a way they do not expect - and nothing else: every other warning, and every error, still
shows.

- pyannote warns, with a screenful of text, when torchcodec (its optional audio file decoder)
  cannot load its FFmpeg libraries. The service hands pyannote decoded samples in memory (the
  case the warning itself names as the way out), so it never needs torchcodec.
- Lightning logs at INFO that it upgraded pyannote's segmentation checkpoint in memory, on every
  start with the ``pyannote`` VAD; its warnings and errors still show.
"""

import logging
import warnings

warnings.filterwarnings("ignore", message=r"\s*torchcodec is not installed correctly",
                        category=UserWarning, module=r"pyannote\.audio\.core\.io")
for _name in ("lightning.pytorch.utilities.migration.utils",
              "pytorch_lightning.utilities.migration.utils"):
    logging.getLogger(_name).setLevel(logging.WARNING)
