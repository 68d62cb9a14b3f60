"""Every setting defined once: the declarative tables behind the CLI flags (grouped by topic in
``--help``), the API's keywords, validation, the resume rule and the flag tables of docs/cli/.
Imports no torch (fast ``--help``).

Adding a training setting is one ``Setting(...)`` entry in TRAIN (tables.py); the click option, the
``charrnn.train(...)`` keyword, its validation and whether ``--resume`` may change it all follow.
"""

from charrnn.settings.run import (NEEDS_TENSORBOARD, PREDATED, TrainConfig, adaptive_dropout,  # noqa: F401
                                  apply_changes, check_combination, patience, config_from_saved, installed,
                                  make_config, with_default_limit)
from charrnn.settings.setting import (ADAPTIVE_DROPOUT, AUTO_PATIENCE, CELLS, CHECKPOINT_DIR,  # noqa: F401
                                      DEFAULT_MAX_EPOCHS, DEVICES, ESCAPES, GROUPS, HEADS, PRECISIONS, SPLITS,
                                      TOKENIZERS, Setting, by_name, check_values, defaults, grouped, help_lines,
                                      signature, unescape)
from charrnn.settings.tables import DYNAMIC, EVAL, SAMPLE, SCORE, SCORING_PRECISION, TRAIN  # noqa: F401
